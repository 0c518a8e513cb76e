"""The main path on py-evm: post, claim, execute, commit, reveal, window, finalize, withdraw, fetch."""

from __future__ import annotations

from pathlib import Path

import pytest

import ree
from coordinator.tasks import (
    INITIAL_CHECKPOINT,
    RunRequest,
    TaskSpecError,
    load_bundle,
    parse_policy,
)
from tests.coordinator.network.net import BUDGET, JOB, Net


def test_bundle_is_deterministic(net: Net) -> None:
    files = {"tiny_job.py": JOB.read_bytes()}
    a = net.client.prepare(net.spec(), files)
    b = net.client.prepare(net.spec(), files)
    assert a.cid == b.cid
    assert net.client.prepare(net.spec(seed=1), files).cid != a.cid
    got = load_bundle(net.store, a.cid)
    assert got.spec == a.spec
    assert {f.name for f in got.files} == {"tiny_job.py", INITIAL_CHECKPOINT}
    assert len(a.spec.initial_root) == 64


def test_spec_refuses_uncaptured_callbacks_and_bad_policy(net: Net) -> None:
    with pytest.raises(TaskSpecError, match="EarlyStopping"):
        net.spec(callbacks=("EarlyStopping",))
    with pytest.raises(TaskSpecError, match="policy"):
        net.spec(policy="replicate:0")
    assert parse_policy("spot:44") == (1, 44)  # the default spot policy (coordinator.dispute.spot_policy)
    assert parse_policy("spot:255") == (1, 255)
    with pytest.raises(TaskSpecError, match=r"1 <= S <= 255"):
        parse_policy("spot:256")  # TaskMarket keeps spotChecks in a uint8


def test_happy_path_pays_the_solver_and_the_client_gets_verified_weights(
    net: Net, tmp_path: Path
) -> None:
    solver = net.add()
    tid = net.submit(steps=7, commit_interval=2)
    before = net.p.balance_of(solver.address)
    net.drive(tid)
    r = net.client.receipt(tid)
    assert r.outcome == "verified"
    assert r.paid == BUDGET - BUDGET * 50 // 10_000
    assert r.fee_burned == BUDGET * 50 // 10_000
    assert net.p.balance_of(solver.address) - before == r.paid  # withdrawn after finalize
    path = net.client.fetch_result(tid, tmp_path / "final.safetensors")
    ck = ree.load_checkpoint(path, expected_root=r.final_root)
    assert ck.tree.leaves["ree/step"] == 7
    # the same job run locally gives the same final root
    b = load_bundle(net.store, r.spec_cid)
    bdir = tmp_path / "b"
    from coordinator.tasks import unpack_bundle

    unpack_bundle(net.store, b, bdir)
    local = net.exe.run(RunRequest(b.spec, bdir, tmp_path / "local", end_step=7))
    assert local.final_root == r.final_root
    assert local.trace.merkle().root.hex() == r.slots[0].trace_root
    net.withdraw_everything()
    net.check_conservation()


def test_a_restarted_solver_reveals_from_its_saved_state_and_withdraws(net: Net) -> None:
    from coordinator.chain import SlotState
    from coordinator.nodes import Solver

    first = net.add(Solver)
    tid = net.submit(policy="replicate:2")  # the reveal waits for a second replica
    first.tick()
    assert SlotState(net.p.get_slot(tid, 0)["state"]) == SlotState.COMMITTED
    # the process dies; a new one starts on the same workdir and account
    again = Solver(net.p, first.account, net.store, net.exe, first.workdir)
    net.nodes[0] = again
    net.add(Solver)
    before = net.p.balance_of(again.address)
    net.drive(tid)
    assert SlotState(net.p.get_slot(tid, 0)["state"]) == SlotState.PAID
    assert net.p.balance_of(again.address) > before
    assert net.p.credit(again.address) == 0
    net.check_conservation()


def test_cancel_works_only_while_unclaimed(net: Net) -> None:
    from coordinator.chain import ChainError

    tid = net.submit()
    net.client.cancel(tid)
    assert net.client.receipt(tid).outcome == "refunded"
    assert net.p.credit(net.client.account.address) == BUDGET
    tid2 = net.submit()
    net.add().tick()
    with pytest.raises(ChainError, match="AlreadyClaimedTask"):
        net.client.cancel(tid2)
    net.withdraw_everything()
    net.check_conservation()


def test_only_a_solver_with_the_task_fingerprint_claims_it(net: Net) -> None:
    from coordinator.nodes import Solver

    other = net.add(Solver, fingerprint="0" * 64)
    match = net.add(Solver, fingerprint="f" * 64)
    tid = net.submit(fingerprint="f" * 64)
    net.drive(tid)
    assert net.p.get_slot(tid, 0)["solver"] == match.address
    assert f"task:{tid}" in other.state.done  # looked once, declined for good
    net.check_conservation()


def test_verify_interval_hook_recomputes_an_interval_end_root(net: Net, tmp_path: Path) -> None:
    from coordinator.tasks import unpack_bundle

    b = net.client.prepare(net.spec(steps=6, commit_interval=3), {"tiny_job.py": JOB.read_bytes()})
    bdir = unpack_bundle(net.store, b, tmp_path / "b")
    full = net.exe.run(RunRequest(b.spec, bdir, tmp_path / "full", end_step=6))
    root = net.exe.pm.hook.gensyn_verify_interval(
        task=RunRequest(b.spec, bdir, tmp_path / "x"), checkpoint=full.checkpoints[3],
        start_step=3, end_step=6, workdir=tmp_path / "v", config=None,
    )  # fmt: skip
    assert root == full.final_root == full.trace.roots[-1]
