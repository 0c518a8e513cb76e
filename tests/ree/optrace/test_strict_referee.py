"""The op referee in strict mode (issue #6): any machine re-executes the one op bit for bit.

A step traced under ``ree.deterministic(mode="strict")`` records the step's own
aten ops (the tracer's hashing runs below strict mode). Re-executed through the
strict kernels, every one of them reproduces its recorded output hashes; the
default kernels do not, for all of them, which is why a strict trace is
refereed in strict mode. A 1-ulp fault in one op is found, and only that op runs.
Random ops (dropout, drawn from strict mode's generator) are in test_strict_rng.py.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from functools import cache
from typing import Any

import pytest
import torch

import ree
from ree.optrace import (
    CHALLENGER,
    DEFENDER,
    Finding,
    OpRecord,
    OpTracer,
    rebuild_inputs,
    reexecute,
    referee,
)
from tests.ree.optrace.adversaries import StrictUlp
from tests.ree.optrace.steps import _batch, run_step


def strict() -> Any:
    return ree.deterministic(mode="strict", seed=0)


def trace(seed: int, cls: type[OpTracer] = OpTracer, keep: tuple[int, ...] = ()) -> OpTracer:
    """Step 2 of a small MLP with Adam, both steps in strict mode (dropout: test_strict_rng.py)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, batch = _batch(seed * 100 + 1), _batch(seed * 100 + 2)  # data, drawn outside
    with strict():
        run_step(model, opt, first)
    state = ree.capture_state(model, opt, step=1)
    with strict():
        tracer = cls(state, batch, step=2, keep=keep)
        with tracer:
            run_step(model, opt, batch)
    return tracer


@cache
def honest(seed: int) -> OpTracer:
    return trace(seed, keep=tuple(range(trace(seed).trace.n)))


def test_strict_kernels_reproduce_every_recorded_op() -> None:
    t = honest(0)
    same_strict = same_default = 0
    for i, rec in enumerate(t.trace.records):
        xs = rebuild_inputs(rec, t.kept[i])
        same_strict += reexecute(rec, xs, strict) == rec.out_hashes
        same_default += reexecute(rec, xs) == rec.out_hashes
    assert same_strict == t.trace.n
    assert same_default < t.trace.n  # the default kernels round differently somewhere


def _fetch(seed: int):  # type: ignore[no-untyped-def]
    def fetch(record: OpRecord) -> list[torch.Tensor]:
        return rebuild_inputs(record, honest(seed).kept[record.index])

    return fetch


@pytest.mark.parametrize("seed", range(6))
def test_strict_referee_finds_a_one_ulp_op(seed: int) -> None:
    good = honest(seed).trace
    rng = random.Random(seed)
    floats = [r.index for r in good.records if r.op in ("aten.addmm.default", "aten.mul.Tensor")]
    target = rng.choice(floats)
    cheat = trace(seed, type("U", (StrictUlp,), {"target": target, "seed": seed})).trace
    honest_role = DEFENDER if seed % 2 == 0 else CHALLENGER
    d, c = (good, cheat) if honest_role == DEFENDER else (cheat, good)
    v = referee(d, c, state_root=good.state_root, batch_root=good.batch_root,
                batch_n=good.batch_n, fetch_inputs=_fetch(seed), execute_in=strict)  # fmt: skip
    assert v.winner == honest_role, v
    assert v.finding is Finding.OUTPUT
    assert v.op_index == target
    assert v.ops_executed == 1


def test_a_strict_op_reexecutes_the_same_on_another_thread_count(tmp_path: Any) -> None:
    """Another process with one intra-op thread (as another machine would run it) gets the
    same output hashes for every recorded op."""
    t = honest(1)
    script = textwrap.dedent("""
        import sys, torch, ree
        torch.set_num_threads(1)
        from tests.ree.optrace.test_strict_referee import honest, strict
        from ree.optrace import rebuild_inputs, reexecute
        t = honest(1)
        for i, rec in enumerate(t.trace.records):
            print(",".join(reexecute(rec, rebuild_inputs(rec, t.kept[i]), strict)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, check=True, cwd=str(__import__("pathlib").Path(__file__).parents[3]))  # fmt: skip
    lines = out.stdout.strip().splitlines()
    assert lines == [",".join(r.out_hashes) for r in t.trace.records]
