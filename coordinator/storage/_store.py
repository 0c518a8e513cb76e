"""The store protocol every backend implements, and the reading half they share.

A store keeps objects (files) under the CID ``ipfs add`` would give them. The
protocol is small: ``put`` returns a CID; ``get``/``open`` return verified
content; ``has``, ``pin``, ``unpin``, ``pins`` and ``gc`` manage retention.
Pins are a set, as in Kubo: pinning twice and unpinning once leaves the object
unpinned. ``gc`` removes every block no pin reaches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, Self, runtime_checkable

from coordinator.storage._cid import CID, parse_cid
from coordinator.storage._errors import CIDMismatchError, InvalidStoreError, NotFoundError
from coordinator.storage._reader import ObjectReader, missing, open_object
from coordinator.storage._unixfs import Source, check_version


@runtime_checkable
class Store(Protocol):
    """What every content-addressed store offers (``LocalStore``, ``IpfsStore``, plugins)."""

    max_object_bytes: int | None
    cid_version: int

    def put(self, source: Source, *, pin: bool = True) -> str:
        """Store bytes, a file (``pathlib.Path`` or binary file) or an iterable; return its CID."""
        ...

    def get(self, cid: str) -> bytes:
        """Return the whole object, every block verified against its CID."""
        ...

    def open(self, cid: str) -> ObjectReader:
        """Return a binary stream over the object that verifies each block as it reads it."""
        ...

    def has(self, cid: str) -> bool:
        """True when every block of the object is held here, without fetching it from elsewhere."""
        ...

    def pin(self, cid: str) -> None:
        """Keep the object (all its blocks) through ``gc``; it must be held here already."""
        ...

    def unpin(self, cid: str) -> bool:
        """Drop the pin on the object; False when it was not pinned."""
        ...

    def pins(self) -> list[str]:
        """The CIDs pinned here."""
        ...

    def gc(self) -> int:
        """Remove every block no pin reaches; return how many were removed."""
        ...

    def close(self) -> None:
        """Release connections and threads; the content stays."""
        ...


class BlockStore:
    """Base of the built-in stores: everything but block I/O, in terms of four primitives.

    Subclasses implement :meth:`_fetch_many` (blocks in order, unverified),
    :meth:`_read_node` (one block, for walking a DAG), :meth:`_exists` (a
    block is held) and the retention methods.
    """

    max_object_bytes: int | None
    cid_version: int

    def __init__(self, *, max_object_bytes: int | None, cid_version: int) -> None:
        if max_object_bytes is not None and (
            isinstance(max_object_bytes, bool)
            or not isinstance(max_object_bytes, int)
            or max_object_bytes < 0
        ):
            raise InvalidStoreError(
                f"max_object_bytes={max_object_bytes!r}: use a byte count >= 0, or None for no limit"
            )
        self.max_object_bytes = max_object_bytes
        self.cid_version = check_version(cid_version)

    # -- primitives --------------------------------------------------------------

    def _fetch_many(self, cids: Sequence[CID]) -> Iterator[bytes]:
        raise NotImplementedError

    def _read_node(self, cid: CID) -> bytes:
        raise NotImplementedError

    def _exists(self, cid: CID) -> bool:
        raise NotImplementedError

    def _on_corrupt(self, cid: CID) -> None:
        """Called when a block fails its hash; a local store forgets its copy."""

    # -- reading -----------------------------------------------------------------

    def open(self, cid: str | CID) -> ObjectReader:
        """Open the object for streaming; the root is fetched and checked now, the rest as read.

        Raises :class:`NotFoundError`, :class:`ObjectTooLargeError` (from the
        root's declared size, before any other block is read), and, from
        ``read``, :class:`CIDMismatchError` for a tampered block.
        """
        root = parse_cid(cid)
        return open_object(self._fetch_many, root, self.max_object_bytes, self._on_corrupt)

    def get(self, cid: str | CID) -> bytes:
        """The whole object, every block verified; nothing is returned if any block is bad."""
        with self.open(cid) as reader:
            return reader.read()

    def has(self, cid: str | CID) -> bool:
        """True when every block of the object is held here (nodes are read and verified)."""
        try:
            return not missing(parse_cid(cid), self._read_node, self._exists)
        except CIDMismatchError:
            return False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release connections or threads; the store's content is untouched."""


def not_found(cid: CID, where: str) -> NotFoundError:
    """The error for a block ``where`` does not hold."""
    return NotFoundError(
        f"block {cid} is not in {where}; put the object first, or fetch it from a store that has it"
    )
