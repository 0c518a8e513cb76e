"""Dispute level 3 through the Accelerate executor: one step's operator trace (DESIGN.md, "A dispute (Verde)").

The recipe's step is traced from the batch its prepared loader yields (the loss
reads the labels outside the model) to the optimizer step. The trace commits to
the root the run committed for step k-1 and is the same when traced again; a
party whose one op is off by an ulp parts from it at exactly that op, and the
referee settles it by re-executing that op. A step of two micro-batches
(gradient accumulation) is traced whole, its later micro-batch fetched ahead
while the loop and accelerate see what an untraced run sees. A step the tracer
cannot follow (a tensor from nowhere in the loss code, a loop that accumulates
on its own) returns ``op_trace_error``, not a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from coordinator.tasks import RunRequest, RunResult
from ree.optrace import (
    OpTrace,
    check_links,
    find_divergence,
    load_op_inputs,
)
from tests.ree.optrace.adversaries import assert_ruled_at_op_both_ways

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


def _job(where: Path, argv: list[str], keep: int) -> Iterator[Job]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENSYN_REE__THREADS", "1")
        spec, bundle = _ship(where, ["--max-steps", str(K), *argv])
        full = _run(spec, bundle, where / "full", end_step=K, checkpoint_every=1)
        assert full.trace.steps == list(range(K + 1))
        honest = _run(spec, bundle, where / "honest", start_checkpoint=full.checkpoints[K - 1],
                      start_step=K - 1, end_step=K, op_trace=list(range(keep)))  # fmt: skip
        yield Job(spec, bundle, full, honest)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    yield from _job(tmp_path_factory.mktemp("accel-optrace"), [], 256)


@pytest.fixture(scope="module")
def accum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    """The same with two micro-batches a step (``--grad-accum 2``)."""
    yield from _job(tmp_path_factory.mktemp("accel-optrace-accum"), ["--grad-accum", "2"], 512)


def _fetch_from(job: Job) -> Any:
    def fetch(record: Any) -> Any:
        return load_op_inputs(job.honest.op_inputs[record.index], record)

    return fetch


def _referee_rules_at(job: Job, faulty: OpTrace, op: int) -> None:
    """The referee, from the honest party's kept inputs, finds ``op`` and rules against its fault."""
    assert_ruled_at_op_both_ways(_trace(job.honest), faulty, op, _fetch_from(job))


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
    _referee_rules_at(job, f, op)


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


def test_a_step_of_two_micro_batches_is_traced_whole_and_commits_an_untraced_runs_roots(
    accum: Job, tmp_path: Path
) -> None:
    res = accum.honest
    assert res.op_trace_error == ""
    trace = _trace(res)
    # the traced run commits what the untraced run committed, from k-1 to k
    assert res.trace.roots == accum.full.trace.roots[K - 1 : K + 1]
    assert trace.state_root == accum.full.trace.roots[K - 1]
    # x and y of both micro-batches are leaves, each read, the first micro-batch first
    assert trace.batch_n == 4
    assert check_links(trace) is None
    read = [i.link.name for r in trace.records for i in r.inputs if i.link.kind == "batch"]
    assert sorted(set(read)) == ["mb0000/0000", "mb0000/0001", "mb0001/0000", "mb0001/0001"]
    assert read[0].startswith("mb0000/")
    assert read[-1].startswith("mb0001/")
    # both micro-batches' forward and backward are in the step, and one optimizer step
    assert sum(r.op == "aten._log_softmax.default" for r in trace.records) == 2


def test_an_ulp_fault_in_the_second_micro_batch_is_ruled_at_that_op(
    accum: Job, tmp_path: Path
) -> None:
    h = _trace(accum.honest)
    op = [r.index for r in h.records if r.op == "aten._log_softmax.default"][-1]
    faulty = _step(accum, tmp_path / "f", op_trace=[op], fault={"ulp_op": [K, op]})
    f = _trace(faulty)
    div = find_divergence(h.records, f.records)
    assert div is not None
    assert (div.index, div.inputs_agree) == (op, True)
    # untraced, the adversary's step runs in the same window: the same op is off
    untraced = _step(accum, tmp_path / "u", fault={"ulp_op": [K, op]})
    assert untraced.final_root == faulty.final_root != accum.full.trace.roots[K]
    _referee_rules_at(accum, f, op)


def test_a_loop_that_accumulates_on_its_own_gives_op_trace_error_and_still_its_root(
    tmp_path: Path,
) -> None:
    source = RECIPE.read_text()
    loop = "        for x, y in loader:\n"
    steps = (
        "                optimizer.step()\n"
        "                scheduler.step()\n"
        "                optimizer.zero_grad()\n"
    )
    assert loop in source
    assert steps in source
    source = source.replace(loop, "        for i, (x, y) in enumerate(loader):\n")
    source = source.replace(steps, "                if i % 2:\n" + steps.replace("    opt", "        opt")
                            .replace("    sch", "        sch"))  # fmt: skip
    spec, bundle = _ship(tmp_path, ["--max-steps", str(K)], source)
    res = _run(spec, bundle, tmp_path / "t", end_step=1, op_trace=[0])
    assert not res.failed, res.traceback
    assert res.op_trace is None
    assert "beyond the 1 that accelerate's gradient accumulation gives it" in res.op_trace_error
    assert res.trace.steps == [0, 1]
    with pytest.raises(Exception, match=r"an op trace covers one step"):
        _run(spec, bundle, tmp_path / "x", end_step=2, op_trace=[])


@pytest.fixture
def _fresh_accelerate_state() -> Iterator[None]:
    """accelerate keeps process-wide singletons; the in-process test starts from none."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.mark.usefixtures("_fresh_accelerate_state")
def test_batches_fetched_ahead_reach_the_loop_as_an_untraced_pass_gives_them() -> None:
    """11 batches, 3 a step: steps of 3, 3, 3 and 2 (accelerate steps at the pass's last)."""
    import accelerate

    from plugins._accel.data import TracedDataLoaderShard
    from plugins._accel.steps import later_micro_batches

    acc = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=3)
    model = torch.nn.Linear(1, 1)
    data = torch.utils.data.TensorDataset(torch.arange(11.0))
    shard = acc.prepare_data_loader(torch.utils.data.DataLoader(data, batch_size=1))
    fetched: list[int] = []

    class Observer:
        def __init__(self, ahead: bool) -> None:
            self.ahead, self.window = ahead, 0

        def _gensyn_before_pass(self, loader: Any) -> None:
            pass

        def _gensyn_before_batch(self, loader: Any, batch: Any) -> None:
            if not self.ahead:
                return
            if self.window:
                self.window -= 1
                return
            more = later_micro_batches(acc, loader)
            self.window = len(loader.fetch_ahead(more))
            fetched.append(self.window)

        def _gensyn_before_next(self, loader: Any) -> None:
            pass

        def _gensyn_after_pass(self, loader: Any) -> None:
            pass

    def seen(ahead: bool) -> list[tuple[Any, ...]]:
        loader = TracedDataLoaderShard.adopt(shard, Observer(ahead))
        out: list[tuple[Any, ...]] = []
        for _epoch in range(2):
            for (x,) in loader:
                with acc.accumulate(model):
                    state = acc.gradient_state
                    out.append((int(x), loader.end_of_dataloader, state.end_of_dataloader,
                                acc.sync_gradients, acc.step))  # fmt: skip
            out.append(("end", loader.iteration, acc.gradient_state.in_dataloader))
        return out

    plain = seen(ahead=False)
    assert [r[0] for r in plain if r[-2] is True and r[0] != "end"] == [2, 5, 8, 10] * 2
    assert seen(ahead=True) == plain
    assert fetched == [2, 2, 2, 1] * 2
