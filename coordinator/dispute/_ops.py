"""Level 3 at the operator: op traces under CIDs, their roots on chain, and the one-op referee.

DESIGN.md, "A dispute (Verde)", level 3. Each party stores the operator trace
of the disputed step (:class:`ree.optrace.OpTrace`, canonical JSON, no pickle)
and posts its CID and Merkle root with ``postOpTrace``. Anyone can then find
the first op where the traces part; a party names the CID of that op's inputs
(a safetensors file, ``ree.optrace.save_op_inputs``) with ``postOpInputs``.
The drawn referee (:func:`judge_ops`):

1. fetches both traces, checks each against its CID and its posted root; when
   either cannot be fetched or does not match what its party committed (an
   honest party whose executor cannot trace the step posts its checkpoint), one
   op cannot settle it and the referee re-executes the whole step;
2. runs :func:`ree.optrace.referee` against the agreed pre-state root: the
   links up to the divergence, then that ONE op re-executed from inputs whose
   hashes both traces agree on;
3. rules on chain with ``ruleOp``, naming the first bad op.

Device mode: the referee must match the task's fingerprint (a re-executed op
is only comparable on the same hardware class and stack). Strict mode: the op
is re-executed through the strict operator set, so any machine referees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coordinator.tasks import BlobStore, get_verified, put_checked
from ree import GensynError
from ree.optrace import (
    CHALLENGER,
    DEFENDER,
    Finding,
    OpRecord,
    OpTrace,
    Verdict,
    find_divergence,
    load_op_inputs,
    referee,
    save_op_inputs,
)

NO_OP = 2**64 - 1  # the op of posted "inputs" that are the party's pre-state checkpoint


class OpLevelError(GensynError, ValueError):
    """Level 3 cannot be settled at the operator here (the caller falls back to the step)."""


@dataclass(frozen=True)
class OpJudgement:
    """The referee's ruling at the operator level."""

    defender_wins: bool
    op: int | None  # the first bad op (None: no op named; the ruling is then ``rule``)
    finding: str
    ops_executed: int
    records: int  # ops in the honest-looking trace: the step's size, for "ops vs a step"
    detail: str = ""


def put_op_trace(store: BlobStore, trace: OpTrace) -> tuple[str, bytes]:
    """Store ``trace`` as canonical JSON; returns (CID, raw Merkle root) for ``postOpTrace``."""
    return put_checked(store, trace.dumps()), bytes.fromhex(trace.root)


def fetch_op_trace(store: BlobStore, cid: str, root: bytes) -> OpTrace:
    """Fetch a posted trace, check its CID, parse it, and check it has the posted root."""
    trace = OpTrace.loads(get_verified(store, cid))
    if bytes.fromhex(trace.root) != root:
        raise OpLevelError(f"op trace {cid} has root {trace.root}, not the posted {root.hex()}")
    return trace


def put_op_inputs(store: BlobStore, record: OpRecord, spans: Sequence[torch.Tensor],
                  workdir: Path) -> str:  # fmt: skip
    """Store the inputs of ``record`` (``OpTracer.kept[i]``); returns the CID for ``postOpInputs``."""
    path = save_op_inputs(workdir / f"op-{record.index}-inputs.safetensors", record, spans)
    try:
        return put_checked(store, path.read_bytes())
    finally:
        path.unlink(missing_ok=True)


_HEADER_BYTES = 1 << 16  # a safetensors header: the file's metadata and one entry per input
_ENTRY_BYTES = 256
_ELEMENT_BYTES = 16  # the widest dtype (complex128)


def inputs_max_bytes(record: OpRecord) -> int:
    """The most bytes :func:`put_op_inputs` can write for ``record``: each input's storage span
    (from its recorded shape and stride) at the widest element, and the header."""
    total = _HEADER_BYTES
    for inp in record.inputs:
        shape, stride = inp.layout
        reach = sum((n - 1) * abs(s) for n, s in zip(shape, stride, strict=True))
        span = 0 if 0 in shape else 1 + reach
        total += _ENTRY_BYTES + _ELEMENT_BYTES * span
    return total


def first_divergence(a: OpTrace, b: OpTrace) -> int | None:
    """The op whose inputs a party should post (None when the traces agree)."""
    div = find_divergence(a.records, b.records)
    return None if div is None else div.index


def _executor(
    mode: str, task_fingerprint: str | None, seed: int
) -> Callable[[], AbstractContextManager[Any]] | None:
    """What the one re-executed op runs inside: strict mode's kernels, or this (matching) device."""
    import ree

    if mode == "strict":
        return lambda: ree.deterministic(mode="strict", seed=seed)
    if mode != "device":
        raise OpLevelError(f"unknown REE mode {mode!r}; use 'device' or 'strict'")
    mine = str(ree.fingerprint("device")["hash"])
    if task_fingerprint is not None and task_fingerprint != mine:
        raise OpLevelError(
            f"device mode: this machine's fingerprint {mine[:16]}... is not the task's "
            f"{task_fingerprint[:16]}...; only a matching machine may referee this dispute"
        )
    return None


def judge_ops(*, store: BlobStore, traces: dict[str, tuple[str, bytes]], state_root: str,
              input_cids: Sequence[str], workdir: Path, mode: str = "device",
              task_fingerprint: str | None = None, seed: int = 0,
              batch: tuple[str, int] | None = None) -> OpJudgement:  # fmt: skip
    """Rule on one disputed step from the parties' posted op traces (see the module docstring).

    ``traces`` maps DEFENDER / CHALLENGER to the (CID, root) each posted;
    ``input_cids`` are the CIDs of op inputs either party posted (tried in turn).
    ``batch`` is the step's (batch root, leaf count) when the referee derived it
    from the task's data and cursor; without it the traces must agree on it.
    Raises :class:`OpLevelError` when one op cannot settle it (the traces ran
    different programs, or no usable inputs were posted): the caller then
    re-executes the whole step.
    """
    execute_in = _executor(mode, task_fingerprint, seed)
    got: dict[str, OpTrace] = {}
    missing: dict[str, str] = {}
    for party, (cid, root) in traces.items():
        try:
            got[party] = fetch_op_trace(store, cid, root)
        except Exception as e:  # unavailable, CID or root mismatch, not a trace
            missing[party] = f"{type(e).__name__}: {e}"
    if missing:
        # One trace alone proves nothing: its ops are only checked against the other's (an
        # honest party whose executor cannot trace the step posts its checkpoint instead), so
        # a missing or unusable trace sends the referee to the whole step, never to a verdict.
        raise OpLevelError(f"no op-level ruling without both traces: {missing}")
    d, c = got[DEFENDER], got[CHALLENGER]
    if batch is None:
        if d.batch_root != c.batch_root or d.batch_n != c.batch_n:
            raise OpLevelError("the traces disagree on the step's batch root; re-execute the step")
        batch = (d.batch_root, d.batch_n)
    fetched: dict[int, list[torch.Tensor]] = {}

    def fetch_inputs(record: OpRecord) -> list[torch.Tensor]:
        if record.index in fetched:
            return fetched[record.index]
        # no more bytes than the smaller of the two records' layouts can need: a party
        # cannot make the referee download (and hold) more than the honest op's inputs
        cap = min(inputs_max_bytes(t.records[record.index]) for t in (d, c))
        for k, cid in enumerate(input_cids):
            path = workdir / f"inputs-{record.index}-{k}.safetensors"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(get_verified(store, cid, max_bytes=cap))
                fetched[record.index] = load_op_inputs(path, record)  # every hash checked
                return fetched[record.index]
            except Exception:  # noqa: S112 - a wrong or missing inputs file: try the next one
                continue
            finally:
                path.unlink(missing_ok=True)
        raise OpLevelError(f"no posted inputs of op {record.index} match both traces")

    v: Verdict = referee(d, c, state_root=state_root, batch_root=batch[0], batch_n=batch[1],
                         fetch_inputs=fetch_inputs, execute_in=execute_in)  # fmt: skip
    if v.winner is None:
        raise OpLevelError(f"one op cannot settle it: {v.finding.value} ({v.detail})")
    if v.finding is Finding.AGREE:  # yet the parties claim different roots after the step
        raise OpLevelError(
            "the op traces are identical, so the claims part after the step's ops (a state "
            "changed outside them); re-execute the step"
        )
    return OpJudgement(v.winner == DEFENDER, v.op_index, v.finding.value, v.ops_executed,
                       max(d.n, c.n), v.detail)  # fmt: skip
