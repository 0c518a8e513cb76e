"""Dispute level 3 through the Lightning executor: one step's operator trace.

DESIGN.md, "A dispute (Verde)", level 3: a request with ``op_trace`` re-runs
step K from the checkpoint of step K-1 under the operator tracer. The trace
starts from the root the run committed at K-1 and changes nothing (the step
ends at the committed root of K); an honest re-run gives the same trace;
gradient accumulation puts every micro-batch in the step's batch; strict mode
links dropout to ``rng/ree``. The ``ulp_op`` adversary nudges the same op
traced or not, and the referee rules for the honest party by re-executing that
one op. A step that cannot be traced returns ``op_trace_error``, not an
exception; the user's code raising in a traced step is a failure commit.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from torch.utils._python_dispatch import _get_current_dispatch_mode

import ree
from coordinator.tasks import RunRequest, RunResult, TaskRunError, TaskSpec, failure_digest
from plugins.lightning_executor import run_lightning
from ree.optrace import (
    CHALLENGER,
    DEFENDER,
    Finding,
    OpRecord,
    OpTrace,
    check_links,
    find_divergence,
    load_op_inputs,
    referee,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore::pytorch_lightning.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch"),
]

JOB = Path(__file__).with_name("lightning_optrace_job.py")
K, STEPS, SEED = 3, 4, 3  # the disputed step, the run's length, the task's seed


@dataclass
class Job:
    """A task, its bundle, and the whole run a solver committed (a root at every step)."""

    spec: TaskSpec
    bundle: Path
    full: RunResult
    tmp: Path

    def run(self, name: str, *, start: int = 0, end: int = STEPS, **kw: Any) -> RunResult:
        ck = self.full.checkpoints[start] if start else None
        return run_lightning(RunRequest(self.spec, self.bundle, self.tmp / name, start_checkpoint=ck,
                                        start_step=start, end_step=end, root_every=1, **kw))  # fmt: skip

    def step_k(self, name: str, **kw: Any) -> RunResult:
        """Step K from the committed checkpoint of K-1 (a dispute party's re-run)."""
        return self.run(name, start=K - 1, end=K, **kw)

    def execute_in(self) -> Callable[[], AbstractContextManager[Any]] | None:
        """How the referee re-executes one op of this task."""
        if self.spec.ree_mode == "strict":
            return lambda: ree.deterministic(mode="strict", seed=SEED)
        return None


def make_job(tmp: Path, *, accumulation: int = 1, ree_mode: str = "device", steps: int = STEPS,
             **init_args: Any) -> Job:  # fmt: skip
    bundle = tmp / "bundle"
    bundle.mkdir(parents=True)
    shutil.copy(JOB, bundle / "lit_job.py")
    spec = TaskSpec(entry="lit_job:build", code=("lit_job.py",), framework="lightning", steps=steps,
                    accumulation=accumulation, seed=SEED, ree_mode=ree_mode,
                    init_args=dict(init_args))  # fmt: skip
    full = run_lightning(RunRequest(spec, bundle, tmp / "full", end_step=steps, root_every=1))
    assert not full.failed, full.traceback
    assert full.trace.steps == list(range(steps + 1))
    return Job(spec, bundle, full, tmp)


JOBS: dict[str, dict[str, Any]] = {
    "device": {},
    "device-acc2": {"accumulation": 2},
    "strict": {"ree_mode": "strict"},
    "strict-acc2": {"ree_mode": "strict", "accumulation": 2},  # strict held across micro-batches
    "pytorch_lightning": {"flavour": "pytorch_lightning"},  # the other package's classes
}


@pytest.fixture(scope="module", params=list(JOBS))
def job(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Job:
    return make_job(tmp_path_factory.mktemp(str(request.param)), **JOBS[request.param])


@pytest.fixture(scope="module")
def honest(job: Job) -> tuple[RunResult, OpTrace]:
    res = job.step_k("honest", op_trace=[])
    assert res.op_trace is not None, res.op_trace_error
    return res, OpTrace.loads(res.op_trace.read_bytes())


def faulty_op(trace: OpTrace) -> int:
    """The op the adversary nudges: the last parameter update, whose error always reaches the
    root (in strict mode, one ulp in the first layer's backward matmul leaves this step's end
    state unchanged, and a wrong op that changes no root is never disputed)."""
    return [r.index for r in trace.records if r.op == "aten.addcdiv_.default"][-1]


def test_a_traced_step_starts_at_the_committed_root_and_ends_at_the_next(
    job: Job, honest: tuple[RunResult, OpTrace]
) -> None:
    res, trace = honest
    assert res.op_trace_error == ""
    assert not res.failed
    assert trace.step == K
    assert trace.state_root == job.full.trace.roots[K - 1]  # what the referee checks on chain
    assert res.trace.roots == job.full.trace.roots[K - 1 : K + 1]  # tracing changed nothing
    assert trace.batch_n == 2 * job.spec.accumulation  # (x, y) of every micro-batch
    assert check_links(trace) is None  # every link holds, every batch leaf is read in order
    ops = [r.op for r in trace.records]
    assert ops.count("aten.mse_loss.default") == job.spec.accumulation
    assert "aten.addcdiv_.default" in ops  # the optimizer step is inside the trace


def test_strict_dropout_draws_are_linked_to_the_strict_generator(
    job: Job, honest: tuple[RunResult, OpTrace]
) -> None:
    draws = [r for r in honest[1].records if r.rng]
    assert len(draws) == job.spec.accumulation  # one dropout mask per micro-batch
    first = draws[0].inputs[-1].link
    if job.spec.ree_mode == "strict":
        assert {r.generator for r in draws} == {"ree"}
        assert (first.kind, first.name) == ("state", "rng/ree")
    else:
        assert (first.kind, first.name) == ("state", "rng/torch_cpu")


def test_an_honest_retrace_gives_the_same_trace(job: Job, honest: tuple[RunResult, OpTrace]) -> None:
    res, trace = honest
    again = job.step_k("again", op_trace=[])
    assert again.op_trace is not None, again.op_trace_error
    assert again.op_trace.read_bytes() == res.op_trace.read_bytes()  # type: ignore[union-attr]
    assert OpTrace.loads(again.op_trace.read_bytes()).root == trace.root


@pytest.mark.parametrize("honest_role", [DEFENDER, CHALLENGER])
def test_one_ulp_at_one_op_is_ruled_at_that_op(
    job: Job, honest: tuple[RunResult, OpTrace], honest_role: str
) -> None:
    good = honest[1]
    op = faulty_op(good)
    mine = job.step_k(f"keep-{honest_role}", op_trace=[op])
    bad = job.step_k(f"ulp-{honest_role}", op_trace=[op], fault={"ulp_op": [K, op]})
    assert mine.op_trace is not None
    assert bad.op_trace is not None
    cheat = OpTrace.loads(bad.op_trace.read_bytes())
    assert cheat.state_root == good.state_root
    assert bad.final_root != job.full.trace.roots[K]
    div = find_divergence(good.records, cheat.records)
    assert div is not None
    assert (div.index, div.inputs_agree) == (op, True)

    def fetch(record: OpRecord) -> list[Any]:
        return load_op_inputs(mine.op_inputs[record.index], record)

    d, c = (good, cheat) if honest_role == DEFENDER else (cheat, good)
    v = referee(d, c, state_root=job.full.trace.roots[K - 1], batch_root=good.batch_root,
                batch_n=good.batch_n, fetch_inputs=fetch, execute_in=job.execute_in())  # fmt: skip
    assert v.winner == honest_role, v
    assert v.finding is Finding.OUTPUT
    assert v.op_index == op
    assert v.ops_executed == 1


def test_the_ulp_adversary_commits_the_roots_of_its_traced_step(
    job: Job, honest: tuple[RunResult, OpTrace]
) -> None:
    """Untraced, the same op is nudged: the faulty solver's committed root at K is its trace's end."""
    op = faulty_op(honest[1])
    fault = {"ulp_op": [K, op]}
    committed = job.run("ulp-full", fault=fault)
    traced = job.step_k("ulp-traced", op_trace=[], fault=fault)
    assert committed.trace.roots[:K] == job.full.trace.roots[:K]
    assert committed.trace.roots[K] != job.full.trace.roots[K]
    assert traced.final_root == committed.trace.roots[K]


def test_an_untraceable_step_returns_op_trace_error(tmp_path: Path) -> None:
    job = make_job(tmp_path, steps=K - 1, untraceable=True)
    res = job.step_k("traced", op_trace=[0])
    assert not res.failed
    assert res.op_trace is None
    assert res.op_inputs == {}
    assert f"step {K} cannot be traced" in res.op_trace_error
    assert "neither an earlier op's output, a state leaf nor a batch tensor" in res.op_trace_error
    assert res.trace.roots == [job.full.trace.roots[K - 1]]
    assert _get_current_dispatch_mode() is None  # the tracer was left
    assert job.step_k("plain").steps_done == K  # the same step untraced runs


def test_user_code_failing_in_a_traced_step_is_a_failure_commit(tmp_path: Path) -> None:
    job = make_job(tmp_path, steps=K - 1, fail_at=K)
    res = job.step_k("traced", op_trace=[])
    assert res.failed
    assert res.error_type == "ValueError"
    assert res.error_digest == failure_digest(K)
    assert res.op_trace is None
    assert res.op_trace_error == ""  # the step was traceable; the user's code raised
    assert _get_current_dispatch_mode() is None


def test_a_trace_request_covers_one_step(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(JOB, bundle / "lit_job.py")
    spec = TaskSpec(entry="lit_job:build", code=("lit_job.py",), framework="lightning", steps=2)
    with pytest.raises(TaskRunError, match="an op trace covers one step"):
        run_lightning(RunRequest(spec, bundle, tmp_path / "out", end_step=2, op_trace=[]))
