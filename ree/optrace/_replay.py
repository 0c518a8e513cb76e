"""Saving one op's inputs, checking them, and re-executing that one op.

DESIGN.md, "Data flow" 5.3: the referee fetches the disputed op's inputs,
checks their hashes against the record, and re-executes that ONE operator.
The inputs travel as a safetensors file (never a pickle): tensor ``in/<k>`` is
the storage span of input k, and the metadata keeps each input's shape and
stride, so the op sees the exact layout the party ran it on (a transposed
weight stays transposed, which can change a matmul's rounding).

Strict mode: pass ``execute_in=lambda: ree.deterministic(mode="strict")`` and
the one call runs through the strict operator set, so any machine can referee a
trace recorded in strict mode (its outputs do not depend on the device). A
random op of such a trace draws from strict mode's generator, set to the
recorded ``[seed, counter]`` for the call.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from ree._encoding import canonical_json
from ree.optrace._recorder import storage_span, strict_generator
from ree.optrace._records import (
    HOST_GENERATOR,
    STRICT_GENERATOR,
    OpRecord,
    OpTraceError,
    const_tensor,
    decode_value,
    encode_value,
    fill_uninitialized,
    generator_hash,
    generator_state,
    generator_tensor,
    tensor_hash,
    written_args,
)

INPUTS_FORMAT = "ree-op-inputs/1"


def save_op_inputs(
    path: str | os.PathLike[str], record: OpRecord, spans: Sequence[torch.Tensor]
) -> Path:
    """Write the kept inputs of ``record`` (``OpTracer.kept[index]``) as a safetensors file."""
    from safetensors.torch import save_file

    if len(spans) != len(record.inputs):
        raise OpTraceError(
            f"op {record.index} has {len(record.inputs)} tensor inputs but {len(spans)} were "
            f"given; record the step again with OpTracer(keep={{{record.index}}})"
        )
    meta = {"format": INPUTS_FORMAT, "index": record.index, "inputs": _inputs_digest(record)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {f"in/{k}": s.contiguous() for k, s in enumerate(spans)},
        str(path),
        metadata={"ree": canonical_json(meta).decode()},
    )
    return path


def load_op_inputs(path: str | os.PathLike[str], record: OpRecord) -> list[torch.Tensor]:
    """Read the inputs of ``record`` and check every hash against it (raises on a mismatch)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            meta = json.loads((f.metadata() or {}).get("ree", "null"))
            spans = [f.get_tensor(f"in/{k}") for k in range(len(record.inputs))]
    except Exception as e:  # safetensors raises its own types for every malformed file
        raise OpTraceError(
            f"{str(path)!r} is not a readable op-inputs file ({e}); fetch it again by its CID"
        ) from e
    if not isinstance(meta, dict) or meta.get("format") != INPUTS_FORMAT:
        raise OpTraceError(f"{str(path)!r} is not an {INPUTS_FORMAT} file")
    if meta.get("inputs") != _inputs_digest(record):
        raise OpTraceError(
            f"{str(path)!r} holds the inputs of another record (op {meta.get('index')!r}), "
            f"not of op {record.index}; ask for the inputs of the disputed op"
        )
    tensors = rebuild_inputs(record, spans)
    check_inputs(record, tensors)
    return tensors


def _inputs_digest(record: OpRecord) -> str:
    """What binds a file to an op's inputs (both parties' records agree on it, not on outputs)."""
    return hashlib.sha256(f"{record.index}:{record.input_key()}".encode()).hexdigest()


def rebuild_inputs(record: OpRecord, spans: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Input tensors with their recorded layout, aliases shared, from storage spans."""
    out: list[torch.Tensor] = []
    for k, (inp, span) in enumerate(zip(record.inputs, spans, strict=True)):
        if 0 <= inp.alias < k:
            out.append(out[inp.alias])
            continue
        shape, stride = inp.layout
        try:
            out.append(torch.as_strided(span.reshape(-1), shape, stride, 0))
        except RuntimeError as e:
            raise OpTraceError(
                f"input {k} of op {record.index} does not fit shape {shape} stride {stride}: {e}"
            ) from e
    return out


def check_inputs(record: OpRecord, tensors: Sequence[torch.Tensor]) -> None:
    """Raise :class:`OpTraceError` unless each tensor hashes to its input's recorded hash."""
    if len(tensors) != len(record.inputs):
        raise OpTraceError(
            f"op {record.index} takes {len(record.inputs)} tensors, got {len(tensors)}"
        )
    for k, (inp, t) in enumerate(zip(record.inputs, tensors, strict=True)):
        if inp.link.kind == "const" and inp.link.const is not None:
            t = const_tensor(inp.link.const)
        if record.rng and k == len(tensors) - 1:
            got = generator_hash(record.generator, t, inp.link.label)
        else:
            got = tensor_hash(t, inp.link.label)
        if got != inp.hash:
            raise OpTraceError(
                f"input {k} of op {record.index} hashes to {got[:16]}..., but the record says "
                f"{inp.hash[:16]}...: the supplier sent the wrong tensor"
            )


def resolve_op(name: str) -> Any:
    """The aten overload ``name`` (``"aten.addmm.default"``); only ``aten`` ops are allowed."""
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "aten":
        raise OpTraceError(f"{name!r} is not an aten operator overload (aten.<op>.<overload>)")
    try:
        return getattr(getattr(torch.ops.aten, parts[1]), parts[2])
    except AttributeError:
        raise OpTraceError(
            f"this torch ({torch.__version__}) has no operator {name!r}; the referee must "
            "match the task's fingerprint"
        ) from None


def reexecute(
    record: OpRecord,
    tensors: Sequence[torch.Tensor],
    execute_in: Callable[[], AbstractContextManager[Any]] | None = None,
) -> tuple[str, ...]:
    """Run the recorded overload once on ``tensors``; return the output hashes it gives.

    The tensors are copied first, so in-place ops never change the caller's copies.
    For a random op, the last tensor is the generator state: the generator the
    record names is set to it for the call and restored afterwards (the host
    generator, or the strict generator of the mode ``execute_in`` enters).
    ``execute_in`` wraps the one call (``lambda: ree.deterministic(mode="strict")``
    runs it through strict mode's kernels); checking and hashing stay outside it.
    """
    check_inputs(record, tensors)
    func = resolve_op(record.op)
    n_args = len(tensors) - 1 if record.rng else len(tensors)
    copies = _copy_keeping_aliases(record, tensors[:n_args])
    args, kwargs = decode_value(record.args, copies)
    strict_state = None
    if record.rng and record.generator == STRICT_GENERATOR:
        strict_state = generator_state(tensors[-1])
    with torch.random.fork_rng(devices=[]):
        if record.rng and record.generator == HOST_GENERATOR:
            torch.set_rng_state(tensors[-1].clone())
        with execute_in() if execute_in is not None else nullcontext():
            out, strict_after = _call(record, func, args, kwargs, strict_state)
        outs: list[torch.Tensor] = []
        enc = encode_value(out, outs)
        fill_uninitialized(record.op, outs)
        outs += written_args(func, args, kwargs, outs)
        hashes = [tensor_hash(t) for t in outs]
        if strict_after is not None:
            hashes.append(generator_hash(STRICT_GENERATOR, generator_tensor(strict_after)))
        elif record.rng:
            hashes.append(tensor_hash(torch.get_rng_state()))
    if enc != record.out:
        # a scalar result (``.item()``) or a structure that differs is an output difference too
        hashes.append("value:" + canonical_json(enc).decode())
    return tuple(hashes)


def _call(
    record: OpRecord,
    func: Any,
    args: Any,
    kwargs: Any,
    strict_state: list[int] | None,
) -> tuple[Any, list[int] | None]:
    """Run ``func``; with ``strict_state``, from that strict generator state, which is
    returned as it is after the call (the generator itself is put back)."""
    if strict_state is None:
        return func(*args, **kwargs), None
    gen = strict_generator()
    if gen is None:
        raise OpTraceError(
            f"op {record.index} ({record.op}) draws from strict mode's generator; re-execute "
            "it in strict mode (execute_in=lambda: ree.deterministic(mode='strict'))"
        )
    saved = gen.state()
    gen.set_state(strict_state)
    try:
        out = func(*args, **kwargs)
        return out, gen.state()
    finally:
        gen.set_state(saved)


def _copy_keeping_aliases(record: OpRecord, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    copies: list[torch.Tensor] = []
    for k, t in enumerate(tensors):
        inp = record.inputs[k]
        if 0 <= inp.alias < k:
            copies.append(copies[inp.alias])
        elif inp.link.kind == "const" and inp.link.const is not None:
            copies.append(const_tensor(inp.link.const))
        else:
            copies.append(torch.as_strided(storage_span(t), t.shape, t.stride(), 0))
    return copies
