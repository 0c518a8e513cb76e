"""Dispute level 3 through the transformers executor: one step's operator trace (DESIGN.md, "A dispute (Verde)").

A traced step must commit to the root the run committed for step k-1, give the
same trace when traced again, and compute the same step as an untraced run. A
party whose one op is off by an ulp parts from the honest trace at exactly that
op, and the referee settles it by re-executing that one op. A step that reads a
tensor the tracer cannot link returns ``op_trace_error``, not an exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import ree
from coordinator.tasks import RunRequest, RunResult
from ree.optrace import (
    OpTrace,
    check_links,
    find_divergence,
    load_op_inputs,
)
from tests.gensyn_integrations.hf import client_app as app
from tests.ree.optrace.adversaries import assert_ruled_at_op_both_ways

STEPS = 6  # 20 examples in micro-batches of 4, two per step: step 4 starts the second epoch


@dataclass
class Job:
    """A shipped job, and an untraced run of it with a root and a checkpoint at every step."""

    spec: Any
    bundle: Path
    full: RunResult


def _ship(where: Path, **kw: Any) -> tuple[Any, Path]:
    from transformers.data.data_collator import default_data_collator

    from gensyn_integrations._hf.ship import build_job
    from gensyn_integrations.transformers import GensynCallback, GensynTrainer

    parts: dict[str, Any] = {
        "model": app.model(), "train_dataset": app.Tokens(), "data_collator": default_data_collator,
        # a norm this small clips every step: the scaling (an in-place ``_foreach_mul_`` that
        # returns nothing) must be traced as writing what the optimizer then reads
        "args": app.args(str(where / "client"), max_steps=STEPS, gradient_accumulation_steps=2,
                         max_grad_norm=1e-3),
        "callbacks": [GensynCallback(role="client", commit_interval=1, mode="device", threads=1)],
    }  # fmt: skip
    parts.update(kw)
    spec, files = build_job(GensynTrainer(**parts))
    bundle = where / "bundle"
    bundle.mkdir(parents=True)
    for name, data in files.items():
        (bundle / name).write_bytes(data)
    return spec, bundle


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Job]:
    """The job in an REE mode (strict: the same task with ``ree_mode="strict"``), built once."""
    from plugins.hf_executor import run_transformers

    where = tmp_path_factory.mktemp("hf-optrace")
    spec, bundle = _ship(where)
    made: dict[str, Job] = {}

    def get(mode: str) -> Job:
        if mode not in made:
            s = dataclasses.replace(spec, ree_mode=mode)
            full = run_transformers(RunRequest(s, bundle, where / mode, end_step=STEPS, root_every=1,
                                               checkpoint_every=1))  # fmt: skip
            assert full.trace.steps == list(range(STEPS + 1))
            made[mode] = Job(s, bundle, full)
        return made[mode]

    return get


@pytest.fixture
def job(jobs: Callable[[str], Job]) -> Job:
    """The job in device mode."""
    return jobs("device")


def _step(job: Job, k: int, out: Path, keep: list[int] | None = None, **kw: Any) -> RunResult:
    """Run step ``k`` alone from the checkpoint of ``k - 1``, as a dispute party does."""
    from plugins.hf_executor import run_transformers

    return run_transformers(RunRequest(job.spec, job.bundle, out, start_checkpoint=job.full.checkpoints[k - 1],
                                       start_step=k - 1, end_step=k, root_every=1,
                                       op_trace=keep, **kw))  # fmt: skip


def _trace(res: RunResult) -> OpTrace:
    assert res.op_trace is not None, res.op_trace_error
    return OpTrace.loads(res.op_trace.read_bytes())


def _fetch(res: RunResult) -> Callable[[Any], list[torch.Tensor]]:
    return lambda record: load_op_inputs(res.op_inputs[record.index], record)


@pytest.mark.parametrize("k", [2, 4])  # mid-epoch, and the first step of an epoch
def test_a_traced_step_commits_to_the_root_of_step_k_minus_1_and_retraces_the_same(
    job: Job, tmp_path: Path, k: int
) -> None:
    first = _step(job, k, tmp_path / "a", keep=[])
    trace = _trace(first)
    assert first.op_trace_error == ""
    assert trace.step == k
    assert trace.state_root == job.full.trace.roots[k - 1] == first.trace.roots[0]
    # under the tracer the step computes what the untraced run computed
    assert first.final_root == job.full.trace.roots[k]
    assert trace.batch_n == 4  # input_ids and labels of both micro-batches, named before the step
    assert check_links(trace) is None  # well linked, and every batch leaf is read in order
    again = _trace(_step(job, k, tmp_path / "b", keep=[]))
    assert again.root == trace.root
    assert again.dumps() == trace.dumps()
    assert not torch.are_deterministic_algorithms_enabled()  # the REE's settings were undone


@pytest.mark.parametrize("mode", ["device", "strict"])
def test_an_ulp_fault_parts_the_traces_at_that_op_and_the_referee_runs_only_it(
    jobs: Callable[[str], Job], tmp_path: Path, mode: str
) -> None:
    job, k = jobs(mode), 3
    honest_plain = _trace(_step(job, k, tmp_path / "probe", keep=[]))
    # the first layer norm: one ulp there reaches the weights (one in some addmm outputs is
    # rounded away before it does)
    op = next(r.index for r in honest_plain.records if r.op == "aten.native_layer_norm.default")
    honest = _step(job, k, tmp_path / "h", keep=[op])
    faulty = _step(job, k, tmp_path / "f", keep=[op], fault={"ulp_op": [k, op]})
    h, f = _trace(honest), _trace(faulty)
    assert h.root == honest_plain.root  # keeping inputs does not change the trace
    div = find_divergence(h.records, f.records)
    assert div is not None
    assert (div.index, div.inputs_agree) == (op, True)
    # the adversary's untraced run is the same program: it commits the root its trace leads to
    untraced = _step(job, k, tmp_path / "u", fault={"ulp_op": [k, op]})
    assert untraced.final_root == faulty.final_root != honest.final_root == job.full.trace.roots[k]
    assert h.state_root == job.full.trace.roots[k - 1]
    # a strict trace records the step's own ops (the tracer sits on top of strict mode), so
    # the referee runs the one op through strict mode's kernels
    run_in = (lambda: ree.deterministic(mode="strict")) if mode == "strict" else None
    assert_ruled_at_op_both_ways(h, f, op, _fetch(honest), run_in)


def test_a_step_that_reads_a_tensor_outside_state_and_batch_gives_op_trace_error(
    tmp_path: Path,
) -> None:
    from plugins.hf_executor import run_transformers
    from tests.gensyn_integrations.hf.optrace_app import Hidden

    spec, bundle = _ship(tmp_path, model=Hidden(app.model().config))
    first = run_transformers(RunRequest(spec, bundle, tmp_path / "s", end_step=1, root_every=1))
    res = run_transformers(RunRequest(spec, bundle, tmp_path / "t", start_checkpoint=first.checkpoints[1],
                                      start_step=1, end_step=2, op_trace=[0]))  # fmt: skip
    assert not res.failed
    assert res.op_trace is None
    assert res.op_inputs == {}
    assert "step 2 cannot be traced" in res.op_trace_error
    assert "(8, 48) torch.float32 tensor" in res.op_trace_error
    assert res.trace.roots[0] == first.trace.roots[1]
    assert not torch.are_deterministic_algorithms_enabled()
    # a request that spans two steps is a mistake of the caller, said before anything runs
    from coordinator.tasks import TaskRunError

    with pytest.raises(TaskRunError, match=r"an op trace covers one step"):
        run_transformers(RunRequest(spec, bundle, tmp_path / "x", end_step=2, op_trace=[]))
