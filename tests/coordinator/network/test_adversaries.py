"""Adversaries as data (DESIGN.md, "What must never happen"): each attack is one node class, and
every test ends with the token accounting: minted = balances + escrow + stakes + credits + burned."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ree
from coordinator.chain import Outcome, SlotState
from coordinator.nodes import Referee, Solver, Verifier
from tests.coordinator.network.adversaries import (
    BribedReferee,
    Copier,
    CrashingSolver,
    LazySolver,
    LyingChallenger,
    OfflineVerifier,
    PerturbingSolver,
)
from tests.coordinator.network.net import BOND, BUDGET, STAKE, Net

FEE_BPS = 50


def _referees(net: Net, n: int = 2) -> None:
    for _ in range(n):
        net.add(Referee)


def _states(net: Net, tid: int) -> list[SlotState]:
    reps = net.p.get_task(tid)["p"]["replicas"]
    return [SlotState(net.p.get_slot(tid, i)["state"]) for i in range(reps)]


def _disputes(net: Net) -> list[dict]:
    n = int(net.p.client.call(net.p.game.functions.disputeCount()))
    return [net.p.get_dispute(i) for i in range(1, n + 1)]


def test_lazy_solver_is_caught_slashed_and_the_client_refunded(net: Net) -> None:
    lazy = net.add(LazySolver)
    net.add(Verifier)
    _referees(net)
    tid = net.submit(steps=8, commit_interval=2)
    net.drive(tid)
    assert _states(net, tid) == [SlotState.SLASHED]
    assert net.p.stake_of(lazy.address)["staked"] == STAKE - BOND
    assert net.client.receipt(tid).outcome == "refunded"
    net.withdraw_everything()
    net.check_conservation()


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_perturbed_step_is_found_exactly_within_the_round_bound(net: Net, where: str) -> None:
    steps, ci = 16, 4
    k = {"first": 1, "middle": 7, "last": 16}[where]
    net.add(Solver)
    bad = net.add(PerturbingSolver, k=k)
    _referees(net)
    tid = net.submit(steps=steps, commit_interval=ci, policy="replicate:2")
    net.drive(tid)
    against_bad = [d for d in _disputes(net) if d["defender"] == bad.address]
    assert against_bad, net.logs()
    d = against_bad[0]
    assert d["step"] == k
    assert d["rounds"] <= math.ceil(math.log2(steps // ci)) + math.ceil(math.log2(ci)) + 2
    assert Outcome(d["outcome"]) == Outcome.CHALLENGER_WON
    assert all(
        Outcome(x["outcome"]) == Outcome.DEFENDER_WON
        for x in _disputes(net)
        if x["defender"] != bad.address
    )
    assert net.client.receipt(tid).outcome == "verified"
    # it loses two bonds: its own wrong result, and its challenge of the honest replica
    assert net.p.stake_of(bad.address)["staked"] == STAKE - 2 * BOND
    net.withdraw_everything()
    net.check_conservation()


def test_copier_cannot_reveal_and_is_slashed(net: Net) -> None:
    honest = net.add(Solver)
    copier = net.add(Copier)
    tid = net.submit(policy="replicate:2")
    before = net.p.balance_of(honest.address)
    net.drive(tid)
    states = _states(net, tid)
    slot_of = {net.p.get_slot(tid, i)["solver"]: i for i in range(2)}
    assert states[slot_of[honest.address]] == SlotState.PAID
    assert states[slot_of[copier.address]] == SlotState.SLASHED
    assert "CommitmentMismatch" in copier.log_path.read_text()
    share = BUDGET // 2
    assert net.p.balance_of(honest.address) - before == share - share * FEE_BPS // 10_000
    assert net.p.stake_of(copier.address)["staked"] == STAKE - BOND
    net.withdraw_everything()
    net.check_conservation()


def test_lying_challenger_loses_its_bond_and_the_solver_is_paid(net: Net) -> None:
    honest = net.add(Solver)
    liar = net.add(LyingChallenger)
    _referees(net)
    tid = net.submit(steps=8, commit_interval=2)
    net.drive(tid)
    (d,) = _disputes(net)
    assert Outcome(d["outcome"]) == Outcome.DEFENDER_WON
    assert _states(net, tid) == [SlotState.PAID]
    assert net.p.stake_of(liar.address)["staked"] == STAKE - BOND
    assert net.p.stake_of(honest.address)["staked"] == STAKE
    net.withdraw_everything()
    net.check_conservation()


def test_bribed_referee_is_overturned_on_appeal_and_slashed(net: Net) -> None:
    from coordinator.chain import Stage

    honest = net.add(Solver)
    liar = net.add(LyingChallenger)
    bribed = net.add(BribedReferee)
    tid = net.submit(steps=8, commit_interval=2)
    net.drive(tid, until=lambda: any(Stage(d["stage"]) == Stage.APPEALABLE for d in _disputes(net)))
    net.add(Referee)  # an honest referee joins the pool only now, so the bribed one ruled first
    net.drive(tid)
    (d,) = _disputes(net)
    assert d["appealed"]
    assert Outcome(d["outcome"]) == Outcome.DEFENDER_WON
    assert _states(net, tid) == [SlotState.PAID]
    assert net.p.stake_of(bribed.address)["staked"] == STAKE - BOND  # the referee bond is BOND here
    assert net.p.stake_of(liar.address)["staked"] == STAKE - BOND
    assert net.p.stake_of(honest.address)["staked"] == STAKE
    net.withdraw_everything()
    net.check_conservation()


def test_killed_solver_times_out_and_another_finishes_from_its_checkpoint(net: Net) -> None:
    dead = net.add(CrashingSolver)
    other = net.add(Solver)
    tid = net.submit(steps=8, commit_interval=2)
    net.drive(tid)
    assert not dead.alive
    (tb,) = dead.state.failures  # its traceback was uploaded as a CID
    assert b"Killed" in net.store.get(tb)
    s = net.p.get_slot(tid, 0)
    assert s["solver"] == other.address
    assert SlotState(s["state"]) == SlotState.PAID
    assert "resuming from step 2" in other.log_path.read_text()
    from coordinator.tasks import load_run

    # the dead solver's steps keep their losses in the final manifest (the client's loggers)
    assert sorted(load_run(net.store, s["manifestCid"]).metrics) == list(range(1, 9))
    r = net.client.receipt(tid)
    assert r.outcome == "verified"
    assert r.paid == BUDGET - BUDGET * FEE_BPS // 10_000  # the client pays once
    assert net.p.stake_of(dead.address)["staked"] == STAKE - BOND
    # the resumed run ends where an uninterrupted one does
    solo = Net(net.chain, net.root / "solo")
    assert r.final_root == _local_final(solo, steps=8, commit_interval=2)
    net.withdraw_everything()
    net.check_conservation()


def _local_final(net: Net, **kw: object) -> str:
    from coordinator.tasks import RunRequest

    b = net.client.prepare(
        net.spec(**kw),
        {
            "tiny_job.py": __import__(
                "tests.coordinator.network.net", fromlist=["JOB"]
            ).JOB.read_bytes()
        },
    )
    bdir = net.root / "bundle"
    from coordinator.tasks import unpack_bundle

    unpack_bundle(net.store, b, bdir)
    return net.exe.run(RunRequest(b.spec, bdir, net.root / "run", end_step=b.spec.steps)).final_root


def test_user_code_raising_at_step_k_is_a_failure_commit_without_slash(net: Net) -> None:
    steps, batch, n, bad = 8, 8, 64, 21
    k = int(np.nonzero(ree.permutation(n, 0, 0) == bad)[0][0]) // batch + 1
    solver = net.add(Solver)
    net.add(Verifier)  # checks the failure too, and agrees
    tid = net.submit(steps=steps, commit_interval=2, batch_size=batch, init_args={"bad_index": bad})
    net.drive(tid)
    s = net.p.get_slot(tid, 0)
    assert s["failed"]
    assert s["steps"] == k - 1
    assert SlotState(s["state"]) == SlotState.PAID
    assert not _disputes(net)
    r = net.client.receipt(tid)
    pay = BUDGET * (k - 1) // steps
    assert r.outcome == "failed"
    assert r.paid == pay - pay * FEE_BPS // 10_000
    assert r.refunded == BUDGET - pay
    assert "ValueError: sample 21 is corrupt" in net.client.failure_traceback(tid)
    assert net.p.stake_of(solver.address)["staked"] == STAKE
    net.withdraw_everything()
    net.check_conservation()


def test_offline_verifier_does_not_stop_finalization(net: Net) -> None:
    net.add(Solver)
    net.add(OfflineVerifier)
    tid = net.submit()
    net.drive(tid)
    assert net.client.receipt(tid).outcome == "verified"
    net.withdraw_everything()
    net.check_conservation()


def test_clean_replicate_two_agrees_splits_pay_and_burns_the_fee(net: Net) -> None:
    a, b = net.add(Solver), net.add(Solver)
    tid = net.submit(policy="replicate:2")
    supply = net.p.supply()
    net.drive(tid)
    r = net.client.receipt(tid)
    assert r.outcome == "verified"
    assert not _disputes(net)
    assert r.slots[0].trace_root == r.slots[1].trace_root
    assert r.slots[0].final_root == r.slots[1].final_root
    share = BUDGET // 2
    fee = share * FEE_BPS // 10_000
    assert r.paid == 2 * (share - fee)
    assert r.fee_burned == 2 * fee
    assert net.p.supply()["burned"] - supply["burned"] == 2 * fee
    assert {s.solver for s in r.slots} == {a.address, b.address}
    net.withdraw_everything()
    net.check_conservation()


@pytest.mark.parametrize("solver_cls", [Solver, LazySolver], ids=["honest", "lazy"])
def test_spot_checks_pay_verifiers_and_catch_a_lazy_solver(net: Net, solver_cls: type) -> None:
    fee = 10**18
    s = net.add(solver_cls)
    v1, v2 = net.add(Verifier), net.add(Verifier)
    _referees(net)
    tid = net.submit(steps=8, commit_interval=2, policy="spot:2", verifier_fee=fee)
    net.drive(tid)
    checked = [v for v in (v1, v2) if "spot check" in v.log_path.read_text()]
    # against the lazy solver, whose manifest names no checkpoint, the first verifier demands
    # one: the lazy solver cannot serve it and is slashed when the data window closes
    if solver_cls is Solver:
        assert len(checked) == 2
    else:
        assert any("withheld; solver slashed" in v.log_path.read_text() for v in (v1, v2))
    if solver_cls is Solver:
        assert _states(net, tid) == [SlotState.PAID]
        assert not _disputes(net)
    else:
        assert _states(net, tid) == [SlotState.SLASHED]
        assert net.p.stake_of(s.address)["staked"] == STAKE - BOND
    events = {
        e.name
        for e in __import__("coordinator.tasks._client", fromlist=["x"]).task_events(net.p, tid)
    }
    assert ("SpotChecked" if solver_cls is Solver else "CheckpointWithheld") in events
    net.withdraw_everything()
    net.check_conservation()


class _BrokenExecutor:
    """Fails every run for a reason outside the task, with a fresh scratch path in each message."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, req: object) -> object:
        from coordinator.tasks import TaskRunError

        self.calls += 1
        raise TaskRunError(f"the sandbox could not run the task: /tmp/scratch-{self.calls}")


def test_a_solver_whose_runs_keep_failing_leaves_its_task_and_stops_claiming(net: Net) -> None:
    broken = net.add(Solver)
    broken.executor = _BrokenExecutor()
    broken.max_failed_tasks = 1
    other = net.add(Solver)
    tid = net.submit(steps=8, commit_interval=2)
    net.drive(tid)
    # it retried while its claim lasted, then left the slot to the working solver
    s = net.p.get_slot(tid, 0)
    assert s["solver"] == other.address, net.logs()
    assert SlotState(s["state"]) == SlotState.PAID
    assert net.client.receipt(tid).outcome == "verified"
    assert net.p.stake_of(broken.address)["staked"] == STAKE - BOND  # one expired claim, not many
    log = broken.log_path.read_text()
    assert log.count("claimed task") == 1
    assert "will not claim the task again" in log
    # the same failure on every tick: its traceback is uploaded once, and the log says so
    # on the 2nd, 4th, 8th... time, not on every tick
    n = broken.executor.calls
    assert n >= 4, log
    (first, *_) = tbs = broken.state.failures
    assert len(tbs) <= 2, tbs  # the first failure in the claiming tick is raised elsewhere
    errors = [ln for ln in log.splitlines() if " error " in ln]
    again = [ln for ln in errors if " again " in ln]
    assert len(errors) == len(tbs) + len(again) < n
    assert [int(ln.split("(")[1].split()[0]) for ln in again] == [
        2**i for i in range(1, len(again) + 1)
    ]
    assert b"/tmp/scratch-1" in net.store.get(first)
    # one task's run failed (max_failed_tasks here): it takes no new task, so it loses no bond
    tid2 = net.submit(steps=8, commit_interval=2)
    net.drive(tid2)
    assert net.p.get_slot(tid2, 0)["solver"] == other.address
    assert net.p.stake_of(broken.address)["staked"] == STAKE - BOND
    assert broken.log_path.read_text().count("stopped claiming new tasks") == 1
    net.withdraw_everything()
    net.check_conservation()
