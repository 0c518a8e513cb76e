"""Random ops in a strict-mode operator trace: dropout draws from strict mode's generator.

A step with ``nn.Dropout`` traced under ``ree.deterministic(mode="strict")``
records each dropout's ``bernoulli_`` with the strict generator's state
``[seed, counter]`` as its last input, linked to the ``rng/ree`` leaf of the
strict state root (the first draw) or to the previous draw's generator output.
Re-executed in strict mode, every op reproduces bit for bit, on any thread
count; a 1-ulp fault in a dropout mask, or after it, is found by running that
one op; a trace whose generator input was tampered with fails its links.
"""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

import ree
from ree._encoding import leaf_hash
from ree._merkle import verify_proof
from ree.optrace import (
    CHALLENGER,
    DEFENDER,
    Finding,
    Link,
    OpRecord,
    OpTrace,
    OpTraceError,
    OpTracer,
    TensorIn,
    check_links,
    load_op_inputs,
    rebuild_inputs,
    reexecute,
    referee,
    save_op_inputs,
)
from ree.strict import current_mode
from tests.ree.optrace.adversaries import StrictUlp
from tests.ree.optrace.steps import _batch, run_step, trace_step

BERNOULLI = "aten.bernoulli_.float"


def strict(seed: int = 0) -> Any:
    return ree.deterministic(mode="strict", seed=seed)


def trace(seed: int, cls: type[OpTracer] = OpTracer, keep: tuple[int, ...] = ()) -> OpTracer:
    """Step 2 of an MLP with dropout and Adam, both steps in strict mode, generator keyed 1000+seed.

    The state of step 1 is a strict root (``rng/ree``, no host generators), and
    step 2's strict mode goes on from the generator state it holds.
    """
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.25),
                                torch.nn.Linear(8, 2))  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, batch = _batch(seed * 100 + 1), _batch(seed * 100 + 2)
    with strict(1000 + seed):
        mode = current_mode()
        assert mode is not None
        run_step(model, opt, first)
        after_first = mode.generator.state()
    state = ree.capture_state(model, opt, step=1, mode="strict", ree_rng=after_first)
    with strict(1000 + seed):
        mode = current_mode()
        assert mode is not None
        mode.generator.set_state(after_first)
        tracer = cls(state, batch, step=2, keep=keep)
        with tracer:
            run_step(model, opt, batch)
    return tracer


@cache
def honest(seed: int) -> OpTracer:
    return trace(seed, keep=tuple(range(trace(seed).trace.n)))


def draws(t: OpTrace) -> list[OpRecord]:
    """The random ops of ``t``, in order."""
    return [r for r in t.records if r.rng]


def _fetch(seed: int):  # type: ignore[no-untyped-def]
    def fetch(record: OpRecord) -> list[torch.Tensor]:
        return rebuild_inputs(record, honest(seed).kept[record.index])

    return fetch


# --------------------------------------------------------------------------- recording


def test_dropout_draws_from_the_strict_generator_linked_to_the_strict_root() -> None:
    tracer = honest(0)
    t = tracer.trace
    rs = draws(t)
    assert len(rs) == 2, "one dropout per micro-batch"
    assert {r.op for r in rs} == {BERNOULLI}
    assert all(r.generator == "ree" for r in rs)
    assert {r.generator for r in t.records if not r.rng} == {"torch_cpu"}
    assert "rng/torch_cpu" not in tracer.state.leaves

    first, second = rs
    link = first.inputs[-1].link
    assert (link.kind, link.name) == ("state", "rng/ree")
    assert link.proof is not None
    assert verify_proof(bytes.fromhex(t.state_root), link.proof)
    assert first.inputs[-1].hash == link.proof.leaf_hash.hex()
    assert first.inputs[-1].hash == leaf_hash("rng/ree", tracer.state.leaves["rng/ree"]).hex()
    seed_, counter = tracer.state.leaves["rng/ree"]
    assert seed_ == 1000
    # the second draw goes on from the first one's generator output: 24 mask words later
    assert second.inputs[-1].link == Link("op", op=first.index, out=len(first.out_hashes) - 1)
    assert first.out_hashes[-1] == leaf_hash("", [1000, counter + 24]).hex()
    assert check_links(t) is None


def test_a_strict_trace_with_dropout_round_trips_and_device_records_stay_as_they_were() -> None:
    t = honest(0).trace
    again = OpTrace.loads(t.dumps())
    assert again.dumps() == t.dumps()
    assert [r.generator for r in again] == [r.generator for r in t]
    assert all(("generator" in r.to_json()) == r.rng for r in t)
    device = trace_step(0).trace
    assert any(r.rng for r in device)
    assert not any("generator" in r.to_json() for r in device)
    with pytest.raises(OpTraceError, match="generator 'mt19937'"):
        OpRecord.from_json({**draws(t)[0].to_json(), "generator": "mt19937"})


def test_a_device_state_cannot_anchor_a_strict_draw() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5))
    x = torch.ones(2, 4)
    state = ree.capture_state(model, step=0)  # device mode: rng/torch_cpu, no rng/ree
    with strict(), pytest.raises(OpTraceError, match="no 'rng/ree' leaf"), \
            OpTracer(state, {"x": x}, step=1):  # fmt: skip
        model(x)


def test_a_strict_draw_not_from_the_captured_generator_state_is_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5))
    x = torch.ones(2, 4)
    with strict(7):
        mode = current_mode()
        assert mode is not None
        state = ree.capture_state(model, step=0, mode="strict", ree_rng=[7, 5])
        with pytest.raises(OpTraceError, match="not the one the trace last saw"), \
                OpTracer(state, {"x": x}, step=1):  # fmt: skip
            model(x)


# --------------------------------------------------------------------------- re-execution


def test_strict_kernels_reproduce_every_op_of_a_step_with_dropout() -> None:
    t = honest(0)
    for i, rec in enumerate(t.trace.records):
        assert reexecute(rec, rebuild_inputs(rec, t.kept[i]), strict) == rec.out_hashes, rec.op


def test_a_strict_draw_needs_strict_mode_and_leaves_its_generator_as_it_was() -> None:
    t = honest(0)
    rec = draws(t.trace)[0]
    xs = rebuild_inputs(rec, t.kept[rec.index])
    with pytest.raises(OpTraceError, match="re-execute it in strict mode"):
        reexecute(rec, xs)
    with strict(5):
        mode = current_mode()
        assert mode is not None
        before = mode.generator.state()
        assert reexecute(rec, xs, lambda: ree.strict.enter_strict(0)) == rec.out_hashes
        assert reexecute(rec, xs, lambda: torch.no_grad()) == rec.out_hashes  # the outer mode
        assert mode.generator.state() == before


def test_a_strict_draw_from_another_counter_gives_other_outputs() -> None:
    """The generator input decides the mask: it is not ignored in favour of the live mode's."""
    t = honest(0)
    rec = draws(t.trace)[1]
    xs = rebuild_inputs(rec, t.kept[rec.index])
    shifted = dataclasses.replace(rec, inputs=rec.inputs[:-1] + (dataclasses.replace(
        rec.inputs[-1], hash=leaf_hash("", [1000, int(xs[-1][1]) + 1]).hex()),))  # fmt: skip
    xs[-1] = xs[-1] + torch.tensor([0, 1])
    assert reexecute(shifted, xs, strict) != rec.out_hashes


def test_the_inputs_of_a_strict_draw_travel_as_a_safetensors_file(tmp_path: Path) -> None:
    t = honest(0)
    rec = draws(t.trace)[0]
    path = save_op_inputs(tmp_path / "in.safetensors", rec, t.kept[rec.index])
    assert reexecute(rec, load_op_inputs(path, rec), strict) == rec.out_hashes
    wrong = [*t.kept[rec.index][:-1], t.kept[rec.index][-1] + torch.tensor([0, 1])]
    save_op_inputs(path, rec, wrong)
    with pytest.raises(OpTraceError, match="input 1 of op"):
        load_op_inputs(path, rec)


def test_a_strict_step_with_dropout_reexecutes_the_same_on_one_thread() -> None:
    """Another process with one intra-op thread gets the same output hashes for every op."""
    t = honest(1)
    script = textwrap.dedent("""
        import torch
        torch.set_num_threads(1)
        from tests.ree.optrace.test_strict_rng import honest, strict
        from ree.optrace import rebuild_inputs, reexecute
        t = honest(1)
        for i, rec in enumerate(t.trace.records):
            print(",".join(reexecute(rec, rebuild_inputs(rec, t.kept[i]), strict)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, check=True, cwd=str(Path(__file__).parents[3]))  # fmt: skip
    assert out.stdout.strip().splitlines() == [",".join(r.out_hashes) for r in t.trace.records]


# --------------------------------------------------------------------------- the referee


def _after_dropout(t: OpTrace, op: str) -> int:
    """The first ``op`` after the first draw (the mask's scaling, the masking, the next layer)."""
    first = draws(t)[0].index
    return next(r.index for r in t.records[first:] if r.op == op)


TARGETS = {
    "mask": lambda t: draws(t)[0].index,
    "second mask": lambda t: draws(t)[1].index,
    "mask scaling": lambda t: _after_dropout(t, "aten.div_.Scalar"),
    "masking": lambda t: _after_dropout(t, "aten.mul.Tensor"),
    "next layer": lambda t: _after_dropout(t, "aten.addmm.default"),
}


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("where", list(TARGETS))
def test_strict_referee_finds_a_one_ulp_op_at_or_after_dropout(where: str, seed: int) -> None:
    good = honest(seed).trace
    target = TARGETS[where](good)
    cheat = trace(seed, type("U", (StrictUlp,), {"target": target, "seed": seed})).trace
    assert check_links(cheat) is None  # the cheat is consistent: only re-execution shows it
    honest_role = DEFENDER if seed % 2 == 0 else CHALLENGER
    d, c = (good, cheat) if honest_role == DEFENDER else (cheat, good)
    v = referee(d, c, state_root=good.state_root, batch_root=good.batch_root,
                batch_n=good.batch_n, fetch_inputs=_fetch(seed), execute_in=strict)  # fmt: skip
    assert v.winner == honest_role, v
    assert v.finding is Finding.OUTPUT
    assert v.op_index == target
    assert v.ops_executed == 1


class Tamper(enum.Enum):
    """Ways to forge a draw's generator input while keeping its link's own check."""

    COUNTER = "first draw claims the root's leaf but hashes another counter"
    RESTART = "second draw restarts from the root's leaf (reuses the first mask)"
    FOREIGN_LEAF = "first draw reads another state leaf, with a valid proof"
    NOT_A_DRAW = "second draw reads an op output that is not a generator state"


def tamper(tracer: OpTracer, how: Tamper) -> tuple[OpTrace, int]:
    """A copy of the honest trace with one draw's generator input forged, and that draw."""
    t = OpTrace.loads(tracer.trace.dumps())
    first, second = draws(t)
    rec = first if how in (Tamper.COUNTER, Tamper.FOREIGN_LEAF) else second
    old = rec.inputs[-1]
    state = tracer.state
    if how is Tamper.COUNTER:
        seed_, counter = state.leaves["rng/ree"]
        new = dataclasses.replace(old, hash=leaf_hash("rng/ree", [seed_, counter + 1]).hex())
    elif how is Tamper.RESTART:
        new = dataclasses.replace(old, hash=first.inputs[-1].hash, link=first.inputs[-1].link)
    elif how is Tamper.FOREIGN_LEAF:
        link = Link("state", name="ree/step", proof=state.proof("ree/step"))
        assert link.proof is not None
        new = TensorIn(link.proof.leaf_hash.hex(), link, 0, old.layout, -1)
    else:
        src = t.records[second.index - 1]
        new = TensorIn(src.out_hashes[0], Link("op", op=src.index, out=0), 0, old.layout, -1)
    t.records[rec.index] = dataclasses.replace(rec, inputs=(*rec.inputs[:-1], new))
    return t, rec.index


@pytest.mark.parametrize("how", list(Tamper))
def test_a_tampered_generator_input_fails_its_link(how: Tamper) -> None:
    tracer = honest(0)
    forged, op = tamper(tracer, how)
    bad = check_links(forged)
    assert bad is not None
    assert (bad.op, bad.finding) == (op, Finding.LINK), bad
    assert check_links(forged, upto=op - 1) is None
    good = tracer.trace
    v = referee(forged, good, state_root=good.state_root, batch_root=good.batch_root,
                batch_n=good.batch_n, fetch_inputs=_fetch(0), execute_in=strict)  # fmt: skip
    assert (v.winner, v.finding, v.op_index, v.ops_executed) == (CHALLENGER, Finding.LINK, op, 0)
