"""Adversaries as data: one faulty solver per class, each seeded (hivemind's `Fault` pattern)."""

from __future__ import annotations

import dataclasses
import enum
import functools
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import _disable_current_modes

from ree.optrace import CHALLENGER, DEFENDER, Finding, OpTrace, OpTracer, batch_tree, referee
from tests.ree.optrace.steps import make_job, trace_step


class Fault(enum.Enum):
    """The attacks the referee must catch."""

    ULP = "1-ulp change in one op's output"
    INCONSISTENT = "honest output for op i, perturbed input downstream"
    REORDER_OWN_ROOT = "rows reordered, trace committed to the reordered batch"
    REORDER_FORGED = "rows reordered, trace claims the real batch root"
    SKIP_MICRO = "a micro-batch skipped"
    SWAP_MICRO = "micro-batches run out of order"


def _nudge(t: torch.Tensor, rng: random.Random) -> None:
    """Move one element of ``t`` by one ulp, in place, without bumping its version."""
    arr = t.detach().numpy()
    flat_index = np.unravel_index(rng.randrange(arr.size), arr.shape)
    arr[flat_index] = np.nextafter(arr[flat_index], np.inf, dtype=arr.dtype)


class ProbeTracer(OpTracer):
    """An honest tracer that also notes which ops' first output is a fresh float tensor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.float_out: set[int] = set()

    def _execute(self, index: int, func: Any, args: Any, kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        first = out[0] if isinstance(out, tuple | list) and out else out
        returns = func._schema.returns
        alias = returns[0].alias_info if returns else None
        if isinstance(first, torch.Tensor) and first.is_floating_point() and first.numel() \
                and (alias is None or alias.is_write) and not str(func).startswith("aten.empty"):
            self.float_out.add(index)
        return out


def consumers(trace: OpTrace, i: int) -> list[int]:
    """Indices of the ops that read an output of op ``i``."""
    return [r.index for r in trace.records
            if any(x.link.kind == "op" and x.link.op == i for x in r.inputs)]


class UlpTracer(OpTracer):
    """Runs op ``target`` and nudges its output by one ulp; everything after is consistent."""

    target = -1
    seed = 0

    def _execute(self, index: int, func: Any, args: Any, kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        if index == self.target:
            first = out[0] if isinstance(out, tuple | list) else out
            if first.is_floating_point() and first.numel():
                _nudge(first, random.Random(self.seed))
        return out


class StrictUlp(OpTracer):
    """Nudges op ``target``'s output by one ulp (the nudge itself below strict mode)."""

    target = -1
    seed = 0

    def _execute(self, index: int, func: Any, args: Any, kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        if index == self.target:
            with _disable_current_modes():
                _nudge(out[0] if isinstance(out, tuple | list) else out, random.Random(self.seed))
        return out


class InconsistentTracer(OpTracer):
    """Records op ``target``'s honest output, then computes on a nudged one, keeping its links."""

    target = -1
    seed = 0

    def _expected(self, link: Any, t: torch.Tensor) -> tuple[str, str]:
        h = super()._expected(link, t)[1]
        return h, h  # trusts identity: no self-check, so a stale link survives

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        index = len(self.trace.records)
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if index == self.target:
            first = out[0] if isinstance(out, tuple | list) else out
            _nudge(first, random.Random(self.seed))
        return out


@dataclass(frozen=True)
class Attack:
    """One seeded trial: the fault, the seed, and the op it targets (when it has one)."""

    fault: Fault
    seed: int
    target: int = -1

    def cheat(self) -> OpTrace:
        """The faulty party's trace of step 2."""
        if self.fault is Fault.ULP:
            cls = type("U", (UlpTracer,), {"target": self.target, "seed": self.seed})
            return trace_step(self.seed, cls).trace
        if self.fault is Fault.INCONSISTENT:
            cls = type("I", (InconsistentTracer,), {"target": self.target, "seed": self.seed})
            return trace_step(self.seed, cls).trace
        if self.fault is Fault.REORDER_OWN_ROOT:
            return trace_step(self.seed, permute=True).trace
        if self.fault is Fault.REORDER_FORGED:
            return _forge_batch_root(trace_step(self.seed, permute=True).trace, self.seed)
        if self.fault is Fault.SKIP_MICRO:
            return trace_step(self.seed, micro=[self.seed % 2]).trace
        return trace_step(self.seed, micro=[1, 0]).trace


def _forge_batch_root(trace: OpTrace, seed: int) -> OpTrace:
    """Claim the real batch's root and proofs while keeping the hashes of the reordered rows."""
    real = batch_tree(make_job(seed).batch)
    records = []
    for r in trace.records:
        inputs = tuple(
            dataclasses.replace(x, link=dataclasses.replace(x.link, proof=real.proof(x.link.name)))
            if x.link.kind == "batch" else x for x in r.inputs)
        records.append(dataclasses.replace(r, inputs=inputs))
    return dataclasses.replace(trace, batch_root=real.root, records=records)


@functools.lru_cache(maxsize=64)
def honest(seed: int) -> ProbeTracer:
    """The honest party's tracer of step 2 for ``seed``, traced once per session."""
    tracer = trace_step(seed, ProbeTracer)
    assert isinstance(tracer, ProbeTracer)
    return tracer


def attacks(fault: Fault, seeds: range, per_seed: int = 1) -> list[Attack]:
    """Seeded trials of ``fault``; ops to target are drawn from the honest trace's eligible ops."""
    out: list[Attack] = []
    for seed in seeds:
        if fault not in (Fault.ULP, Fault.INCONSISTENT):
            out.append(Attack(fault, seed))
            continue
        h = honest(seed)
        pool = sorted(h.float_out)
        if fault is Fault.INCONSISTENT:
            pool = [i for i in pool if consumers(h.trace, i)]
        rng = random.Random(f"{fault.name}:{seed}")
        out += [Attack(fault, seed, t) for t in rng.sample(pool, per_seed)]
    return out


def assert_ruled_at_op_both_ways(
    honest: OpTrace,
    faulty: OpTrace,
    op: int,
    fetch_inputs: Callable[[Any], list[torch.Tensor]],
    execute_in: Callable[[], AbstractContextManager[Any]] | None = None,
) -> None:
    """The referee finds ``op`` and rules against the faulty trace, whichever side it is on,
    re-executing that one op from the honest party's kept inputs."""
    for defender, challenger, winner in ((honest, faulty, DEFENDER), (faulty, honest, CHALLENGER)):
        verdict = referee(defender, challenger, state_root=honest.state_root,
                          batch_root=honest.batch_root, batch_n=honest.batch_n,
                          fetch_inputs=fetch_inputs, execute_in=execute_in)  # fmt: skip
        assert (verdict.winner, verdict.finding, verdict.op_index) == (winner, Finding.OUTPUT, op)
        assert verdict.ops_executed == 1
