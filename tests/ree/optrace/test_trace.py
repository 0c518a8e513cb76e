"""Recording, serializing and replaying operator traces of an honest step."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ree.optrace import (
    OpTrace,
    OpTraceError,
    check_links,
    load_op_inputs,
    rebuild_inputs,
    reexecute,
    resolve_op,
    save_op_inputs,
)
from tests.ree.optrace.steps import trace_step


@pytest.mark.parametrize("seed", [0, 1])
def test_the_same_step_traces_to_the_same_root(seed: int) -> None:
    a, b = trace_step(seed).trace, trace_step(seed).trace
    assert a.root == b.root
    assert a.dumps() == b.dumps()
    assert trace_step(seed + 10).trace.root != a.root


def test_a_trace_round_trips_through_its_canonical_bytes() -> None:
    trace = trace_step(0).trace
    again = OpTrace.loads(trace.dumps())
    assert again.root == trace.root
    assert again.dumps() == trace.dumps()
    with pytest.raises(OpTraceError, match="not an ree-optrace/1"):
        OpTrace.loads(b'{"format": "other"}')


def test_an_honest_trace_links_every_input() -> None:
    trace = trace_step(0).trace
    assert check_links(trace) is None
    kinds = {x.link.kind for r in trace for x in r.inputs}
    assert {"op", "state", "batch"} <= kinds
    assert any(r.rng for r in trace), "dropout must show up as a random op"


@pytest.mark.parametrize("seed", [0, 3])
def test_every_honest_op_reexecutes_to_its_recorded_outputs(seed: int) -> None:
    probe = trace_step(seed)
    tracer = trace_step(seed, keep=range(probe.trace.n))
    for r in tracer.trace:
        assert reexecute(r, rebuild_inputs(r, tracer.kept[r.index])) == r.out_hashes, r.op


def test_op_inputs_file_is_checked_against_the_record(tmp_path: Path) -> None:
    tracer = trace_step(0, keep=(5, 6))
    r5, r6 = tracer.trace.records[5], tracer.trace.records[6]
    path = save_op_inputs(tmp_path / "in.safetensors", r5, tracer.kept[5])
    assert reexecute(r5, load_op_inputs(path, r5)) == r5.out_hashes
    with pytest.raises(OpTraceError, match="inputs of another record"):
        load_op_inputs(path, r6)
    forged = dataclasses.replace(r5, inputs=(dataclasses.replace(r5.inputs[0], hash="00" * 32),
                                             *r5.inputs[1:]))
    with pytest.raises(OpTraceError):
        reexecute(forged, rebuild_inputs(r5, tracer.kept[5]))
    (tmp_path / "junk").write_bytes(b"\x80\x04junk")
    with pytest.raises(OpTraceError, match="not a readable"):
        load_op_inputs(tmp_path / "junk", r5)


def test_a_tampered_link_is_reported_with_its_op() -> None:
    trace = trace_step(0).trace
    r = next(r for r in trace if r.inputs and r.inputs[0].link.kind == "op")
    bad = dataclasses.replace(r.inputs[0], hash="11" * 32)
    trace.records[r.index] = dataclasses.replace(r, inputs=(bad, *r.inputs[1:]))
    failure = check_links(trace)
    assert failure is not None
    assert failure.op == r.index
    assert "is not output" in failure.detail


@pytest.mark.parametrize("name", ["os.system.default", "aten.nope.default", "aten.add"])
def test_only_existing_aten_overloads_resolve(name: str) -> None:
    with pytest.raises(OpTraceError):
        resolve_op(name)


@pytest.mark.parametrize("foreach", [True, False])
def test_gradient_clipping_writes_what_the_optimizer_reads(foreach: bool) -> None:
    """``_foreach_mul_`` (clip_grad_norm_) returns nothing, yet the optimizer reads the gradients
    it scaled: the op's written arguments are its outputs, linked to, and re-executed."""
    import torch

    import ree
    from ree.optrace import OpTracer
    from tests.ree.optrace.steps import make_job

    def step(keep: range | tuple[int, ...] = ()) -> OpTracer:
        job = make_job(0)
        tracer = OpTracer(ree.capture_state(job.model, job.opt, step=1), job.batch, step=2,
                          keep=keep)  # fmt: skip
        with tracer:
            job.opt.zero_grad()
            for m in range(2):
                x, y = job.batch[f"mb{m}/x"], job.batch[f"mb{m}/y"]
                (torch.nn.functional.mse_loss(job.model(x), y) / 2).backward()
            torch.nn.utils.clip_grad_norm_(job.model.parameters(), 1e-3, foreach=foreach)
            job.opt.step()
        return tracer

    trace = step().trace
    assert check_links(trace) is None
    scaling = [r for r in trace if r.op.startswith(("aten._foreach_mul_", "aten.mul_"))
               and any(x.link.kind == "op" for x in r.inputs)]  # fmt: skip
    assert scaling, [r.op for r in trace]
    first = scaling[0]
    assert len(first.out_hashes) >= 1
    readers = [r for r in trace for x in r.inputs
               if x.link.kind == "op" and x.link.op == first.index]  # fmt: skip
    assert readers, "nothing reads what the clipping wrote"
    kept = step(keep=range(trace.n))
    for r in kept.trace:
        assert reexecute(r, rebuild_inputs(r, kept.kept[r.index])) == r.out_hashes, r.op
