"""Deterministic task bundles: the spec and its files under one CID.

DESIGN.md, "Data flow", step 2 and "Trust boundaries": a task bundle is a
``coordinator.storage`` bundle (canonical JSON manifest of names, sizes and
CIDs, sorted by name) holding the spec as ``task.json`` plus only source
files, data shards and REE checkpoints (safetensors plus JSON), so the same
job always gives the same bundle CID. Everything fetched is checked against
its CID before it is used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.storage import (
    BundleEntry,
    BundleError,
    ObjectTooLargeError,
    Store,
    compute_cid,
    extract_bundle,
    get_bundle,
    put_bundle,
    verify_cid,
)
from coordinator.tasks._errors import TaskBundleError
from coordinator.tasks._spec import TaskSpec
from ree._encoding import canonical_json

INITIAL_CHECKPOINT = "initial.safetensors"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


BlobStore = Store  # what the task layer needs of a store: any coordinator.storage store


def get_verified(store: BlobStore, cid: str, max_bytes: int | None = None) -> bytes:
    """Fetch ``cid`` and check the bytes against it before anyone uses them.

    ``max_bytes`` refuses an object whose declared size is larger, before its
    content is fetched (the store's own ``max_object_bytes`` applies as well).
    """
    if max_bytes is None:
        data = store.get(cid)
    else:
        with store.open(cid) as reader:
            size = getattr(reader, "size", None)  # the root's declared size, where known
            too_big = size is not None and size > max_bytes
            data = b"" if too_big else reader.read(max_bytes + 1)
        if too_big or len(data) > max_bytes:
            raise ObjectTooLargeError(
                f"object {cid} is over the {max_bytes} bytes this fetch allows "
                f"({'declared ' + str(size) if size is not None else 'read more'}); it cannot be "
                "what was asked for"
            )
    verify_cid(data, cid)
    return data


def put_checked(store: BlobStore, data: bytes) -> str:
    """Store ``data`` and check the store named it by its true CID."""
    cid = store.put(data)
    if cid != compute_cid(data):
        raise TaskBundleError(
            f"the store named {len(data)} bytes {cid!r}, not {compute_cid(data)!r}: it is not a "
            "CIDv1 raw-leaves store; configure storage with cid_version=1"
        )
    return cid


def put_json(store: BlobStore, obj: Any) -> str:
    """Store canonical JSON of ``obj``; return its CID."""
    return put_checked(store, canonical_json(obj))


def get_json(store: BlobStore, cid: str) -> Any:
    """Fetch, CID-check and parse a JSON object."""
    try:
        return json.loads(get_verified(store, cid))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskBundleError(f"object {cid} is not JSON: {e}") from e


SPEC_FILE = "task.json"


@dataclass(frozen=True)
class TaskBundle:
    """A stored task bundle: its CID (the task's ``specCid`` on chain), spec and files."""

    cid: str
    spec: TaskSpec
    files: tuple[BundleEntry, ...]

    def entry(self, name: str) -> BundleEntry:
        """The file called ``name``."""
        for f in self.files:
            if f.name == name:
                return f
        raise TaskBundleError(f"bundle {self.cid} has no file {name!r}")


def _check_name(name: str) -> None:
    if name.endswith(_PICKLE_SUFFIXES):
        raise TaskBundleError(
            f"bundle file {name!r} looks like a pickle; only source files, data shards and REE "
            "checkpoints (safetensors) may cross machines (DESIGN.md, Trust boundaries)"
        )


def build_bundle(spec: TaskSpec, files: Mapping[str, bytes], store: BlobStore) -> TaskBundle:
    """Store ``files`` and the spec (as ``task.json``) as one storage bundle; same job, same CID.

    ``files`` must hold every name in ``spec.code`` and ``spec.data``, and the
    initial REE checkpoint when ``spec.initial_weights`` is set.
    """
    needed = set(spec.code) | set(spec.data)
    if spec.initial_weights:
        needed.add(INITIAL_CHECKPOINT)
    missing = sorted(needed - set(files))
    if missing:
        raise TaskBundleError(f"the bundle lacks {missing}, named by the spec; pass their bytes")
    if SPEC_FILE in files:
        raise TaskBundleError(f"{SPEC_FILE!r} is the spec's own name in a bundle; rename that file")
    for name in files:
        _check_name(name)
    cid = put_bundle(store, {**{k: bytes(v) for k, v in files.items()}, SPEC_FILE: spec.dumps()})
    b = load_bundle(store, cid)
    if spec.initial_weights and b.entry(INITIAL_CHECKPOINT).cid != spec.initial_weights:
        raise TaskBundleError(
            f"spec.initial_weights is {spec.initial_weights!r} but {INITIAL_CHECKPOINT} "
            f"hashes to {b.entry(INITIAL_CHECKPOINT).cid!r}"
        )
    return b


def load_bundle(store: BlobStore, cid: str) -> TaskBundle:
    """Fetch and check a task bundle's manifest and spec (not its other files: see :func:`unpack_bundle`)."""
    try:
        sb = get_bundle(store, cid)
        raw = sb.read(store, SPEC_FILE)
    except KeyError:
        raise TaskBundleError(f"bundle {cid} has no {SPEC_FILE}: it is not a task bundle") from None
    except BundleError as e:
        raise TaskBundleError(f"{cid} is not a valid bundle: {e}") from e
    files = tuple(e for e in sb if e.name != SPEC_FILE)
    for f in files:
        _check_name(f.name)
    return TaskBundle(cid, TaskSpec.from_json(raw), files)


def unpack_bundle(store: BlobStore, bundle: TaskBundle, dest: Path) -> Path:
    """Extract every file of ``bundle`` into ``dest`` (which must not exist), each checked against its CID."""
    return extract_bundle(store, bundle.cid, dest)
