"""Dispute level 3 through the Accelerate executor: one step's operator trace (DESIGN.md, "A dispute (Verde)").

The recipe's step is traced from the batch its prepared loader yields (the loss
reads the labels outside the model) to the optimizer step. The trace commits to
the root the run committed for step k-1 and is the same when traced again; a
party whose one op is off by an ulp parts from it at exactly that op, and the
referee settles it by re-executing that op. A step the tracer cannot follow (a
tensor from nowhere in the loss code, several batches) returns
``op_trace_error``, not a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.tasks import RunRequest, RunResult
from ree.optrace import (
    CHALLENGER,
    DEFENDER,
    Finding,
    OpTrace,
    check_links,
    find_divergence,
    load_op_inputs,
    referee,
)

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "accelerate_classifier.py"
K = 2  # the disputed step


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSYN_REE__THREADS", "1")


@dataclass
class Job:
    """The shipped recipe, an untraced run to step K with a root and checkpoint at every step,
    and the honest party's traced step K keeping every op's inputs."""

    spec: Any
    bundle: Path
    full: RunResult
    honest: RunResult


def _ship(where: Path, argv: list[str], source: str | None = None) -> tuple[Any, Path]:
    from gensyn_integrations._accel.remote import build_job
    from gensyn_integrations.config import load_config

    spec, files = build_job(load_config(env={}), str(RECIPE), argv, K)
    bundle = where / "bundle"
    bundle.mkdir(parents=True)
    for name, data in files.items():
        (bundle / name).write_bytes(data)
    if source is not None:
        (bundle / RECIPE.name).write_text(source)
    return spec, bundle


def _run(spec: Any, bundle: Path, out: Path, **kw: Any) -> RunResult:
    from plugins.accelerate_executor import run_accelerate

    return run_accelerate(RunRequest(spec, bundle, out, root_every=1, **kw))


def _step(job: Job, out: Path, **kw: Any) -> RunResult:
    """Step K alone from the checkpoint of K - 1, as a dispute party runs it."""
    return _run(job.spec, job.bundle, out, start_checkpoint=job.full.checkpoints[K - 1],
                start_step=K - 1, end_step=K, **kw)  # fmt: skip


def _trace(res: RunResult) -> OpTrace:
    assert res.op_trace is not None, res.op_trace_error or res.traceback
    return OpTrace.loads(res.op_trace.read_bytes())


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    where = tmp_path_factory.mktemp("accel-optrace")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENSYN_REE__THREADS", "1")
        spec, bundle = _ship(where, ["--max-steps", str(K)])
        full = _run(spec, bundle, where / "full", end_step=K, checkpoint_every=1)
        assert full.trace.steps == list(range(K + 1))
        honest = _run(spec, bundle, where / "honest", start_checkpoint=full.checkpoints[K - 1],
                      start_step=K - 1, end_step=K, op_trace=list(range(256)))  # fmt: skip
        yield Job(spec, bundle, full, honest)


def test_a_traced_step_commits_to_the_root_of_step_k_minus_1_and_retraces_the_same(
    job: Job, tmp_path: Path
) -> None:
    trace = _trace(job.honest)
    assert job.honest.op_trace_error == ""
    assert trace.step == K
    assert trace.state_root == job.full.trace.roots[K - 1] == job.honest.trace.roots[0]
    assert job.honest.final_root == job.full.trace.roots[K]  # the tracer changed nothing
    # x feeds the model, y the user's loss outside it: both are batch leaves, read in order
    assert trace.batch_n == 2
    assert check_links(trace) is None
    dropout = [r for r in trace.records if r.rng]
    assert [r.inputs[-1].link.name for r in dropout] == ["rng/torch_cpu"]
    assert sorted(job.honest.op_inputs) == list(range(trace.n))
    again = _trace(_step(job, tmp_path / "again", op_trace=[]))
    assert again.root == trace.root


def test_an_ulp_fault_parts_the_traces_at_that_op_and_the_referee_runs_only_it(
    job: Job, tmp_path: Path
) -> None:
    h = _trace(job.honest)
    # one ulp in the log-softmax reaches the weights through its backward (one in the first
    # layer's output may fall below the ReLU)
    op = next(r.index for r in h.records if r.op == "aten._log_softmax.default")
    faulty = _step(job, tmp_path / "f", op_trace=[op], fault={"ulp_op": [K, op]})
    f = _trace(faulty)
    div = find_divergence(h.records, f.records)
    assert div is not None
    assert (div.index, div.inputs_agree) == (op, True)
    # the adversary's untraced run is the same program: it commits the root its trace leads to
    untraced = _step(job, tmp_path / "u", fault={"ulp_op": [K, op]})
    assert untraced.op_trace is None
    assert untraced.final_root == faulty.final_root != job.full.trace.roots[K]

    def fetch(record: Any) -> Any:
        return load_op_inputs(job.honest.op_inputs[record.index], record)

    roots = {"state_root": h.state_root, "batch_root": h.batch_root, "batch_n": h.batch_n}
    for defender, challenger, winner in ((h, f, DEFENDER), (f, h, CHALLENGER)):
        verdict = referee(defender, challenger, **roots, fetch_inputs=fetch, execute_in=None)
        assert (verdict.winner, verdict.finding, verdict.op_index) == (winner, Finding.OUTPUT, op)
        assert verdict.ops_executed == 1


def test_a_loss_that_reads_a_tensor_from_nowhere_gives_op_trace_error(tmp_path: Path) -> None:
    source = RECIPE.read_text()
    loss = "                loss = nn.functional.cross_entropy(model(x), y)\n"
    assert loss in source
    source = source.replace(loss, loss + "                loss = loss + 0.0 * HIDDEN.sum()\n")
    source = source.replace("def main(", "HIDDEN = torch.arange(100.0)\n\n\ndef main(")
    spec, bundle = _ship(tmp_path, ["--max-steps", str(K)], source)
    res = _run(spec, bundle, tmp_path / "t", end_step=1, op_trace=[0])
    assert not res.failed, res.traceback
    assert res.op_trace is None
    assert "step 1 cannot be traced" in res.op_trace_error
    assert "(100,) torch.float32 tensor" in res.op_trace_error
    assert res.trace.steps == [0]


def test_a_step_of_several_batches_gives_op_trace_error_and_still_its_root(tmp_path: Path) -> None:
    spec, bundle = _ship(tmp_path, ["--max-steps", str(K), "--grad-accum", "2"])
    res = _run(spec, bundle, tmp_path / "t", end_step=1, op_trace=[0])
    assert not res.failed, res.traceback
    assert res.op_trace is None
    assert "more than one batch (gradient accumulation)" in res.op_trace_error
    assert res.trace.steps == [0, 1]
    with pytest.raises(Exception, match=r"an op trace covers one step"):
        _run(spec, bundle, tmp_path / "x", end_step=2, op_trace=[])
