"""Canonical encodings of state leaves (DESIGN.md, "The state schema", normative).

A leaf is encoded as one byte string whose SHA-256 is the leaf hash:

* tensor leaf: ``b"T" ‖ u32be(len(name)) ‖ name ‖ u32be(len(dtype)) ‖ dtype ‖
  u32be(ndim) ‖ u64be(dim)... ‖ data`` where ``dtype`` is torch's dtype name
  without the ``torch.`` prefix (``float32``, ``bfloat16``) and ``data`` is the
  tensor's contiguous little-endian bytes, taken raw for every dtype;
* value leaf: ``b"V" ‖ u32be(len(name)) ‖ name ‖ canonical_json(value)``.

Names are UTF-8. Binding the name into the leaf means a renamed tensor changes
the root. Tensor data is streamed into the hash, never copied into one buffer.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
from typing import Any

import torch

from ree._errors import StateSchemaError

TENSOR_TAG = b"T"
VALUE_TAG = b"V"

PlainValue = None | bool | int | float | str | list[Any]


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON: sorted keys, no spaces, UTF-8.

    Floats use Python's ``repr`` (the shortest string that round-trips).
    NaN and infinities are not JSON and are refused.
    """
    _check_plain(value, "value")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StateSchemaError(
                f"{where} is {value!r}: non-finite floats have no canonical JSON; "
                "store it as a tensor instead"
            )
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise StateSchemaError(f"{where} has a non-string key {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise StateSchemaError(
        f"{where} is a {type(value).__name__} ({value!r:.80}); a state leaf holds a tensor "
        "or a plain value (bool, int, float, str, None, or lists of them)"
    )


def is_plain(value: Any) -> bool:
    """True when ``value`` can be a value leaf."""
    try:
        _check_plain(value, "value")
    except StateSchemaError:
        return False
    return True


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The contiguous little-endian bytes of ``t`` on the CPU, without a copy where possible."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    t = t.contiguous()
    if sys.byteorder != "little" and t.element_size() > 1:  # pragma: no cover - no BE hosts here
        t = t.reshape(-1).view(torch.uint8).view(-1, t.element_size()).flip(-1).contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _name_bytes(name: str) -> bytes:
    raw = name.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def tensor_header(name: str, t: torch.Tensor) -> bytes:
    """The bytes that precede a tensor leaf's data."""
    dt = dtype_name(t.dtype).encode("ascii")
    shape = tuple(t.shape)
    return (
        TENSOR_TAG
        + _name_bytes(name)
        + struct.pack(">I", len(dt))
        + dt
        + struct.pack(">I", len(shape))
        + b"".join(struct.pack(">Q", d) for d in shape)
    )


def encode_value(name: str, value: Any) -> bytes:
    """The whole encoding of a value leaf."""
    return VALUE_TAG + _name_bytes(name) + canonical_json(value)


def leaf_hash(name: str, value: torch.Tensor | Any) -> bytes:
    """SHA-256 of the leaf's encoding (32 raw bytes)."""
    if isinstance(value, torch.Tensor):
        h = hashlib.sha256(tensor_header(name, value))
        h.update(tensor_bytes(value))
        return h.digest()
    return hashlib.sha256(encode_value(name, value)).digest()
