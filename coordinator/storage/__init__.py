"""Content-addressed storage: CIDs equal to ``ipfs add``, a local store, an IPFS store, bundles.

Models, checkpoints, datasets and task bundles move through this package
(DESIGN.md, "Real parts": storage). Nothing fetched is used before its CID is
checked: every store verifies every block as it reads it.

* :func:`compute_cid` / :func:`compute_cid_stream`: the CID ``ipfs add``
  prints (v1: ``--cid-version 1 --raw-leaves``; v0: plain), hashed as a stream.
* :class:`LocalStore`: the embedded default, a directory shared by processes.
* :class:`IpfsStore`: a Kubo-compatible daemon over its RPC API.
* :func:`put_bundle` / :func:`get_bundle`: several files under one CID.
* :func:`store_from_config`: the built-in backends by ``storage.backend`` name.

Importing this package does not import httpx (until :class:`IpfsStore` is
used) or torch (until a bundle manifest is written or read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coordinator.storage._bundle import (
    Bundle,
    BundleEntry,
    extract_bundle,
    get_bundle,
    pin_bundle,
    put_bundle,
    unpin_bundle,
)
from coordinator.storage._cid import CID, normalize_cid, parse_cid
from coordinator.storage._errors import (
    BundleError,
    CIDMismatchError,
    InvalidCIDError,
    InvalidStoreError,
    MalformedObjectError,
    NotFoundError,
    ObjectTooLargeError,
    StorageError,
    StoreTimeoutError,
    StoreUnavailableError,
    UnsupportedCIDError,
)
from coordinator.storage._local import LocalStore
from coordinator.storage._reader import MAX_BLOCK_BYTES, ObjectReader
from coordinator.storage._store import Store
from coordinator.storage._unixfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    Source,
    compute_cid,
    compute_cid_stream,
    verify_cid,
)

if TYPE_CHECKING:
    from coordinator.storage._ipfs import IpfsStore

__all__ = [
    "CHUNK_SIZE",
    "CID",
    "MAX_BLOCK_BYTES",
    "MAX_LINKS",
    "BACKENDS",
    "Bundle",
    "BundleEntry",
    "BundleError",
    "CIDMismatchError",
    "InvalidCIDError",
    "InvalidStoreError",
    "IpfsStore",
    "LocalStore",
    "MalformedObjectError",
    "NotFoundError",
    "ObjectReader",
    "ObjectTooLargeError",
    "Source",
    "StorageError",
    "Store",
    "StoreTimeoutError",
    "StoreUnavailableError",
    "UnsupportedCIDError",
    "compute_cid",
    "compute_cid_stream",
    "extract_bundle",
    "get_bundle",
    "normalize_cid",
    "parse_cid",
    "pin_bundle",
    "put_bundle",
    "store_from_config",
    "unpin_bundle",
    "verify_cid",
]

BACKENDS = ("local", "ipfs")
"""The ``storage.backend`` names :func:`store_from_config` builds."""


def __getattr__(name: str) -> Any:
    if name == "IpfsStore":  # imports httpx: only when asked for
        from coordinator.storage._ipfs import IpfsStore

        return IpfsStore
    raise AttributeError(f"module 'coordinator.storage' has no attribute {name!r}")


def store_from_config(section: Any) -> Store:
    """Build the built-in store a ``storage`` config section names.

    ``section`` is any object with ``backend`` (``"local"`` or ``"ipfs"``),
    ``path``, ``ipfs_api_url`` and ``max_object_bytes`` attributes, such as
    ``gensyn_integrations.config.StorageConfig``.
    """
    backend = section.backend
    if backend == "local":
        return LocalStore.from_config(section)
    if backend == "ipfs":
        from coordinator.storage._ipfs import IpfsStore

        return IpfsStore.from_config(section)
    raise InvalidStoreError(
        f"storage.backend {backend!r} is not a built-in store; use one of {BACKENDS}, "
        "or install the plugin that offers it"
    )
