"""Checkpoint availability: a demanded checkpoint is served on chain as its state leaves.

TaskMarket's availability game (see its contract notes): a verifier that cannot
fetch the checkpoint behind a trace leaf demands it; the solver answers with
the canonical encoding of every state leaf, in tree order (DESIGN.md, "The
state schema" and "Merkle trees"). The contract recomputes the state root
from those bytes and proves it against the trace root, so what was served is
the committed state, and it stays readable from the transaction's calldata.
This module turns a checkpoint into those encodings and back.

Limits: a state is served in one transaction, so it must fit in a block's
calldata (about 22 gas a byte, measured by bench/gas.py: some 1.3 MB at
30M gas); extra JSON outside the root (the HF
executor's cursor) is not served.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from ree import StateTree, load_checkpoint, save_checkpoint
from ree._encoding import TENSOR_TAG, VALUE_TAG, encode_value, tensor_bytes, tensor_header
from ree._errors import CheckpointError

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.uint16, torch.uint32, torch.uint64,
    torch.float8_e5m2, torch.float8_e4m3fn,
)}  # fmt: skip


def state_encodings(tree: StateTree) -> list[bytes]:
    """Every leaf's canonical encoding, in tree order (sha256 of each is its leaf hash)."""
    out = []
    for name, v in tree.leaves.items():
        if isinstance(v, torch.Tensor):
            out.append(tensor_header(name, v) + bytes(tensor_bytes(v)))
        else:
            out.append(encode_value(name, v))
    return out


def checkpoint_encodings(path: str | os.PathLike[str], root: str | None = None) -> list[bytes]:
    """The encodings of the REE checkpoint at ``path`` (its root checked against ``root``)."""
    return state_encodings(load_checkpoint(path, root).tree)


def _u32(b: bytes, at: int) -> tuple[int, int]:
    if at + 4 > len(b):
        raise CheckpointError("a served leaf ends inside a length field")
    return struct.unpack_from(">I", b, at)[0], at + 4


def _name(b: bytes, at: int) -> tuple[str, int]:
    n, at = _u32(b, at)
    if at + n > len(b):
        raise CheckpointError("a served leaf ends inside its name")
    return b[at : at + n].decode("utf-8"), at + n


def decode_leaf(enc: bytes) -> tuple[str, torch.Tensor | object]:
    """One leaf back from its encoding (raises :class:`CheckpointError` on malformed bytes)."""
    tag = enc[:1]
    name, at = _name(enc, 1)
    if tag == VALUE_TAG:
        return name, json.loads(enc[at:].decode("utf-8"))
    if tag != TENSOR_TAG:
        raise CheckpointError(f"a served leaf starts with {tag!r}, not a leaf tag")
    dt, at = _name(enc, at)
    if dt not in _DTYPES:
        raise CheckpointError(f"served leaf {name!r} has unknown dtype {dt!r}")
    ndim, at = _u32(enc, at)
    if at + 8 * ndim > len(enc):
        raise CheckpointError(f"served leaf {name!r} ends inside its shape")
    shape = struct.unpack_from(f">{ndim}Q", enc, at)
    at += 8 * ndim
    dtype = _DTYPES[dt]
    numel = 1
    for d in shape:
        numel *= d
    data = enc[at:]
    if len(data) != numel * torch.empty((), dtype=dtype).element_size():
        raise CheckpointError(f"served leaf {name!r} has {len(data)} data bytes for shape {shape}")
    if numel == 0:
        return name, torch.empty(shape, dtype=dtype)
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape)
    return name, t.clone()


def tree_from_encodings(encodings: list[bytes]) -> StateTree:
    """The state tree the encodings describe (its root is what the contract computed)."""
    return StateTree(dict(decode_leaf(e) for e in encodings))


def checkpoint_from_encodings(encodings: list[bytes], path: str | os.PathLike[str],
                              root: str | None = None) -> Path:  # fmt: skip
    """Write the served state as an REE checkpoint at ``path``; checks ``root`` when given."""
    tree = tree_from_encodings(encodings)
    if root is not None and tree.root != root.lower().removeprefix("0x"):
        raise CheckpointError(f"served leaves hash to {tree.root}, not the demanded {root}")
    save_checkpoint(path, tree)
    return Path(path)
