"""REE checkpoints: safetensors plus canonical JSON, and nothing that unpickles.

DESIGN.md, "Trust boundaries" (normative): only REE checkpoints cross between
machines. The file is a plain safetensors file:

* every tensor leaf of the state tree, under its leaf name;
* ``__metadata__["ree"]``: canonical JSON ``{"format", "version", "root", "n",
  "values", "extra"}`` where ``values`` holds the plain leaves and ``extra``
  carries data outside the root (the trace so far, framework loop counters).

The writer is ours, so the same state always gives the same bytes (and CID), and
tensor bytes stream to disk without a second copy. Files are written to a
temporary name, fsynced and renamed, so a crash never leaves half a checkpoint.
Loading refuses pickles and zip archives (``torch.save``, Lightning ``.ckpt``)
by their bytes, reads with safetensors, and recomputes the root.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ree._encoding import canonical_json, tensor_bytes
from ree._errors import CheckpointError, RootMismatchError, StateSchemaError, UnsafeCheckpointError
from ree._state import StateTree

FORMAT = "ree-checkpoint"
VERSION = 1
_MAX_HEADER = 256 << 20

_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.uint16: "U16", torch.uint32: "U32",
    torch.uint64: "U64", torch.float8_e5m2: "F8_E5M2", torch.float8_e4m3fn: "F8_E4M3",
}


@dataclass
class Checkpoint:
    """A loaded REE checkpoint: the state tree, its verified root, and the extra JSON."""

    tree: StateTree
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def root(self) -> str:
        """The hex state root, recomputed from the bytes that were read."""
        return self.tree.root


def save_checkpoint(path: str | os.PathLike[str], tree: StateTree,
                    extra: dict[str, Any] | None = None) -> str:
    """Write ``tree`` (and ``extra``, outside the root) atomically; return the hex root."""
    path = Path(path)
    tensors = {k: v for k, v in tree.leaves.items() if isinstance(v, torch.Tensor)}
    values = {k: v for k, v in tree.leaves.items() if not isinstance(v, torch.Tensor)}
    root = tree.root
    meta = {"format": FORMAT, "version": VERSION, "root": root, "n": tree.n,
            "values": values, "extra": extra or {}}
    header: dict[str, Any] = {"__metadata__": {"ree": canonical_json(meta).decode("utf-8")}}
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _DTYPES:
            raise StateSchemaError(f"leaf {name!r} has dtype {t.dtype}, which safetensors cannot hold")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for t in tensors.values():
                f.write(tensor_bytes(t))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return root


def _sniff(path: Path) -> None:
    """Refuse pickles and zip archives by their first bytes, before anything parses them."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {str(path)!r}; check the path") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e}") from e
    if len(head) >= 9:
        (hlen,) = struct.unpack("<Q", head[:8])
        if hlen <= _MAX_HEADER and 8 + hlen <= size and head[8:9] == b"{":
            return  # shaped like safetensors; safetensors itself validates the rest
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04" or head[:1] in (b"(", b"c", b"]", b"}"):
        kind = "a zip archive (torch.save / Lightning .ckpt)" if head[:2] == b"PK" else "a pickle"
        raise UnsafeCheckpointError(
            f"{str(path)!r} is {kind}; REE checkpoints are safetensors, and pickled files "
            "are never loaded because unpickling runs code. Re-export the state on the machine "
            "that wrote it with ree.save_checkpoint (or GensynTraceCallback)"
        )
    raise CheckpointError(
        f"{str(path)!r} is not a safetensors file or is truncated ({size} bytes); "
        "fetch it again by its CID"
    )


def load_checkpoint(path: str | os.PathLike[str], expected_root: str | None = None) -> Checkpoint:
    """Read an REE checkpoint, recompute its root, and check it.

    The root must equal the one in the header, and ``expected_root`` when given
    (the root committed on chain or in a trace). Raises :class:`UnsafeCheckpointError`
    for pickles, :class:`CheckpointError` for truncated or malformed files, and
    :class:`RootMismatchError` when the content does not hash to the expected root.
    """
    from safetensors import safe_open

    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            meta_raw = (f.metadata() or {}).get("ree")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:  # safetensors raises its own error types for every malformed file
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({e}); it is truncated or "
            "corrupt: fetch it again by its CID"
        ) from e
    meta = _parse_meta(path, meta_raw)
    values = meta["values"]
    clash = set(values) & set(tensors)
    if clash:
        raise CheckpointError(f"{str(path)!r} names {sorted(clash)[:3]} both as tensor and value")
    tree = StateTree({**tensors, **values})
    if tree.n != meta["n"]:
        raise CheckpointError(f"{str(path)!r} holds {tree.n} leaves but its header says {meta['n']}")
    if tree.root != meta["root"]:
        raise RootMismatchError(
            f"{str(path)!r} hashes to root {tree.root} but its header says {meta['root']}: "
            "the file was altered after it was written; do not use it"
        )
    if expected_root is not None and tree.root != expected_root.lower().removeprefix("0x"):
        raise RootMismatchError(
            f"{str(path)!r} has state root {tree.root}, not the expected {expected_root}: it is "
            "another state (wrong step or task) or was tampered with"
        )
    return Checkpoint(tree=tree, extra=meta["extra"], path=path)


def _parse_meta(path: Path, raw: str | None) -> dict[str, Any]:
    if raw is None:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file without REE metadata: it is model weights, "
            "not an REE checkpoint (write one with ree.save_checkpoint)"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(path)!r} has malformed REE metadata: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an {FORMAT} file")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{str(path)!r} is {FORMAT} version {meta.get('version')!r}; this build reads "
            f"version {VERSION}: upgrade gensyn-integrations"
        )
    for key, typ in (("values", dict), ("extra", dict), ("root", str), ("n", int)):
        if not isinstance(meta.get(key), typ):
            raise CheckpointError(f"{str(path)!r} REE metadata field {key!r} is missing or malformed")
    return meta
