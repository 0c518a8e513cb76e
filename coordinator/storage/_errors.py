"""Errors of content-addressed storage: bad CIDs, tampered blocks, limits, stores down.

Every class derives from :class:`StorageError`, itself a ``GensynError``, and
also from the builtin it stands for, so ``except KeyError`` or
``except ConnectionError`` keeps working. A message says what was wrong, with
the value, and what to do.
"""

from __future__ import annotations

from ree._errors import GensynError


class StorageError(GensynError):
    """Root of the errors raised by ``coordinator.storage``."""


class InvalidStoreError(StorageError, ValueError):
    """A store's settings or directory are invalid (a negative limit, a foreign directory)."""


class InvalidCIDError(StorageError, ValueError):
    """A CID string or binary CID is malformed: bad multibase, varint, version or length."""


class UnsupportedCIDError(InvalidCIDError):
    """A well-formed CID names a codec or hash function this package does not verify."""


class CIDMismatchError(StorageError, ValueError):
    """Bytes do not hash to the CID they were fetched or stored under.

    Raised before any of the bytes are returned: a tampered or truncated
    block never reaches the caller.
    """


class MalformedObjectError(StorageError, ValueError):
    """A block hashes correctly but is not a well-formed UnixFS file node.

    Its protobuf is invalid, its UnixFS type is not a file, or its sizes
    disagree with its links (the declared ``filesize`` or ``blocksizes`` do not
    match what the children hold).
    """


class ObjectTooLargeError(StorageError, ValueError):
    """An object or a single block is over the store's size limit."""


class NotFoundError(StorageError, KeyError):
    """The store does not hold the object, one of its blocks, or a pin for it."""

    def __str__(self) -> str:
        # KeyError.__str__ shows repr(message), quotes included; show the message.
        return str(self.args[0]) if self.args else ""


class StoreUnavailableError(StorageError, ConnectionError):
    """The store's daemon cannot be reached or answered with an error; the message names its URL."""


class StoreTimeoutError(StoreUnavailableError, TimeoutError):
    """The store's daemon accepted the request but did not answer in time."""


class BundleError(StorageError, ValueError):
    """A bundle's file names or manifest are invalid, or a file disagrees with its manifest entry."""
