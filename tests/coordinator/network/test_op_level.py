"""Level 3 through the nodes (issue #6): the parties' executors record the disputed step's
operator trace, post it and the first divergent op's inputs, and the drawn referee rules at
ONE op with ``ruleOp``; a trace whose links do not hold loses; an untraceable step falls back
to re-executing the whole step. Every test ends with the token accounting."""

from __future__ import annotations

import shutil
from pathlib import Path

from coordinator.chain import Outcome, SlotState
from coordinator.dispute import NO_OP
from coordinator.nodes import Referee, Solver
from coordinator.tasks import RunRequest
from ree.optrace import OpTrace
from tests.coordinator.network.adversaries import (
    InconsistentTraceSolver,
    LyingChallenger,
    UlpSolver,
    UntraceableSolver,
)
from tests.coordinator.network.net import BOND, JOB, STAKE, Net, executor

STEPS, CI, K = 8, 2, 5


def honest_trace(net: Net, tmp: Path) -> OpTrace:
    """The honest operator trace of step K of the tiny job, as the nodes will run it."""
    net_spec = net.spec(steps=STEPS, commit_interval=CI)
    bdir = tmp / "bundle"
    bdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(JOB, bdir / "tiny_job.py")
    ex = executor()
    run = ex.run(RunRequest(net_spec, bdir, tmp / "run", end_step=K - 1, root_every=1))
    res = ex.run(RunRequest(net_spec, bdir, tmp / "trace", start_checkpoint=run.checkpoints[K - 1],
                            start_step=K - 1, end_step=K, root_every=1, op_trace=[]))  # fmt: skip
    assert res.op_trace is not None, res.op_trace_error
    return OpTrace.loads(res.op_trace.read_bytes())


def last_op(trace: OpTrace, name: str) -> int:
    """The last op called ``name`` in the step (the backward matmul of the first layer, whose
    one-ulp error reaches every later root; some ops' ulps round away by the next root)."""
    return [r.index for r in trace.records if r.op == name][-1]


def _disputes(net: Net) -> list[dict]:
    n = int(net.p.client.call(net.p.game.functions.disputeCount()))
    return [net.p.get_dispute(i) for i in range(1, n + 1)]


def _referee_log(net: Net) -> str:
    return "\n".join(n.log_path.read_text() for n in net.nodes
                     if isinstance(n, Referee) and n.log_path.exists())  # fmt: skip


def _play(net: Net, cls: type[UlpSolver], op: int) -> tuple[UlpSolver, int]:
    net.add(Solver)
    bad = net.add(cls, k=K, op=op)
    for _ in range(2):
        net.add(Referee)
    tid = net.submit(steps=STEPS, commit_interval=CI, policy="replicate:2")
    net.drive(tid)
    return bad, tid


def test_one_ulp_in_one_op_is_ruled_at_exactly_that_op(net: Net, tmp_path: Path) -> None:
    trace = honest_trace(net, tmp_path / "honest")
    op = last_op(trace, "aten.mm.default")
    bad, tid = _play(net, UlpSolver, op)
    ds = _disputes(net)
    against_bad = [d for d in ds if d["defender"] == bad.address]
    by_bad = [d for d in ds if d["challenger"] == bad.address]
    assert against_bad, net.logs()
    assert by_bad, net.logs()
    for d in against_bad + by_bad:
        assert d["step"] == K
        assert d["badOp"] == op + 1, net.logs()  # the chain names the injected op
    assert all(Outcome(d["outcome"]) == Outcome.CHALLENGER_WON for d in against_bad)
    assert all(Outcome(d["outcome"]) == Outcome.DEFENDER_WON for d in by_bad)
    log = _referee_log(net)
    assert f"op {op} (re-executing the op gave other outputs, 1 op run of {trace.n})" in log, log
    assert "re-executing the step" not in log
    assert net.client.receipt(tid).outcome == "verified"
    assert net.p.stake_of(bad.address)["staked"] == STAKE - 2 * BOND
    net.withdraw_everything()
    net.check_conservation()


def test_an_inconsistent_trace_loses_on_its_links(net: Net, tmp_path: Path) -> None:
    trace = honest_trace(net, tmp_path / "honest")
    op = last_op(trace, "aten.mm.default")
    bad, tid = _play(net, InconsistentTraceSolver, op)
    against_bad = [d for d in _disputes(net) if d["defender"] == bad.address]
    assert against_bad, net.logs()
    assert all(Outcome(d["outcome"]) == Outcome.CHALLENGER_WON for d in against_bad)
    assert all(0 < d["badOp"] != NO_OP + 1 for d in against_bad)
    log = _referee_log(net)
    assert "a dataflow link does not hold" in log, log
    assert net.client.receipt(tid).outcome == "verified"
    net.withdraw_everything()
    net.check_conservation()


def test_an_honest_solver_that_cannot_trace_still_wins(net: Net) -> None:
    """It posts its checkpoint where a trace goes; the liar's trace alone proves nothing, so the
    referee re-executes the step, and the liar loses (it used to win on "trace unavailable")."""
    honest = net.add(UntraceableSolver)
    liar = net.add(LyingChallenger)
    for _ in range(2):
        net.add(Referee)
    tid = net.submit(steps=STEPS, commit_interval=CI)
    net.drive(tid)
    (d,) = _disputes(net)
    assert Outcome(d["outcome"]) == Outcome.DEFENDER_WON, net.logs()
    assert d["badOp"] == 0  # no op named: the whole step decided
    log = _referee_log(net)
    assert "no op-level ruling without both traces" in log, log
    assert net.p.get_slot(tid, 0)["state"] == SlotState.PAID
    assert net.p.stake_of(liar.address)["staked"] == STAKE - BOND
    assert net.p.stake_of(honest.address)["staked"] == STAKE
    net.withdraw_everything()
    net.check_conservation()
