"""The main path on py-evm: post, claim, commit-reveal, spot checks, finalize, timeouts,
replicate k, failure commits, revert decoding, event polling and concurrent nonces."""

from __future__ import annotations

import os
import threading

import pytest

from coordinator.chain import ChainError, EventPoller, Reveal, SlotState
from tests.coordinator.chain.chain_helpers import BOND, E18, WINDOW, TraceModel, World, solve

CI, STEPS = 4, 32


def test_happy_path_pays_budget_minus_burned_fee(world: World) -> None:
    w, p = world, world.p
    tid = p.post_task(w.alice, w.task()).value
    assert tid == 1
    slot = solve(w, w.bob, tid, TraceModel(), CI, STEPS)
    assert p.stake_of(w.bob.address)["locked"] == BOND
    with pytest.raises(ChainError, match="TooEarly"):
        p.finalize(w.carol, tid, slot)
    w.client.advance_time(WINDOW + 1)
    burned0 = p.supply()["burned"]
    r = p.finalize(w.carol, tid, slot)
    fee = 1000 * E18 * 50 // 10_000
    assert r.event("Paid")["pay"] == 1000 * E18 - fee
    assert p.supply()["burned"] - burned0 == fee
    assert p.stake_of(w.bob.address)["locked"] == 0
    before = p.balance_of(w.bob.address)
    p.withdraw(w.bob)
    assert p.balance_of(w.bob.address) - before == 1000 * E18 - fee
    assert SlotState(p.get_slot(tid, slot)["state"]) == SlotState.PAID
    w.check_conservation()


def test_replicate_splits_budget_and_gates_reveals(world: World) -> None:
    w, p = world, world.p
    tid = p.post_task(w.alice, w.task(replicas=2, budget=1001)).value
    s0 = p.claim(w.bob, tid).value
    s1 = p.claim(w.carol, tid).value
    with pytest.raises(ChainError, match="NoFreeSlot"):
        p.claim(w.dave, tid)
    r0, pr0 = TraceModel().reveal(CI, STEPS)
    p.commit(w.bob, tid, s0, r0)
    with pytest.raises(ChainError, match="RevealPhaseNotOpen"):
        p.reveal(w.bob, tid, s0, r0, pr0)
    r1, pr1 = TraceModel().reveal(CI, STEPS)
    p.commit(w.carol, tid, s1, r1)
    p.reveal(w.bob, tid, s0, r0, pr0)
    p.reveal(w.carol, tid, s1, r1, pr1)
    w.client.advance_time(WINDOW + 1)
    pays = [p.finalize(w.dave, tid, s).event("Paid") for s in (s0, s1)]
    # 1001 split 500 / 501; the fee rounds down to 2 on each
    assert [x["pay"] + x["feeBurned"] for x in pays] == [500, 501]
    w.check_conservation()


def test_failure_commit_pays_steps_done_and_refunds_rest(world: World) -> None:
    w, p = world, world.p
    tid = p.post_task(w.alice, w.task(budget=3200)).value
    slot = p.claim(w.bob, tid).value
    r, proof = TraceModel().reveal(CI, 8, failed=True)
    p.commit(w.bob, tid, slot, r)
    p.reveal(w.bob, tid, slot, r, proof)
    w.client.advance_time(WINDOW + 1)
    paid = p.finalize(w.dave, tid, slot).event("Paid")
    assert paid["pay"] + paid["feeBurned"] == 3200 * 8 // 32
    assert p.credit(w.alice.address) == 3200 - 800
    assert p.stake_of(w.bob.address)["staked"] == 10_000 * E18  # not slashed
    w.check_conservation()


def test_spot_check_pays_fee_and_unused_fees_are_refunded(world: World) -> None:
    w, p = world, world.p
    tid = p.post_task(w.alice, w.task(spot_checks=2, verifier_fee=7 * E18)).value
    slot = solve(w, w.bob, tid, TraceModel(), CI, STEPS)
    w.client.mine()  # the spot-check draw is fixed by the block after the reveal
    salt = os.urandom(32)
    p.spot_commit(w.dave, tid, slot, True, salt)
    idx = p.spot_index(tid, slot, w.dave.address)
    assert 1 <= idx <= STEPS // CI
    tree = TraceModel().tree(CI, STEPS)
    leaf = TraceModel().leaf(idx, CI, STEPS)
    with pytest.raises(ChainError, match="BadProof"):
        p.spot_reveal(w.dave, tid, slot, True, salt, os.urandom(32), tree.proof(idx).siblings)
    r = p.spot_reveal(w.dave, tid, slot, True, salt, leaf, tree.proof(idx).siblings)
    assert r.event("SpotChecked")["fee"] == 7 * E18
    w.client.advance_time(WINDOW + 1)
    p.finalize(w.gov, tid, slot)
    assert p.credit(w.dave.address) == 7 * E18
    assert p.credit(w.alice.address) == 7 * E18  # the unused second check
    w.check_conservation()


def test_unclaimed_task_is_refunded(world: World) -> None:
    w, p = world, world.p
    tid = p.post_task(w.alice, w.task()).value
    with pytest.raises(ChainError, match="TooEarly"):
        p.timeout_slot(w.gov, tid, 0)
    w.client.advance_time(WINDOW + 1)
    with pytest.raises(ChainError, match="TooLate"):
        p.claim(w.bob, tid)
    p.timeout_slot(w.gov, tid, 0)
    assert p.credit(w.alice.address) == 1000 * E18
    w.check_conservation()


@pytest.mark.parametrize("stop_after", ["claim", "commit"])
def test_missed_deadline_slashes_bond_and_refunds(world: World, stop_after: str) -> None:
    w, p = world, world.p
    tid = p.post_task(w.alice, w.task()).value
    slot = p.claim(w.bob, tid).value
    if stop_after == "commit":
        p.commit(w.bob, tid, slot, TraceModel().reveal(CI, STEPS)[0])
    w.client.advance_time(2 * WINDOW + 1 + (WINDOW if stop_after == "commit" else 0))
    p.timeout_slot(w.gov, tid, slot)
    assert p.stake_of(w.bob.address)["staked"] == 10_000 * E18 - BOND
    assert p.slash_credit(w.alice.address) == BOND // 2
    assert p.credit(w.alice.address) == 1000 * E18
    w.check_conservation()


def test_revert_decodes_custom_error_with_args_and_hint(world: World) -> None:
    w, p = world, world.p
    with pytest.raises(ChainError) as ei:
        p.request_unstake(w.alice, 5)
    e = ei.value
    assert e.error == "InsufficientFreeStake"
    assert e.args_decoded == {"account": w.alice.address, "free": 0, "needed": 5}
    assert "What to do" in str(e)
    with pytest.raises(ChainError, match="NotGovernance"):
        p.govern(w.alice, "market", "setFeeBps", 10)
    with pytest.raises(ChainError, match="ParameterOutOfRange"):
        p.govern(w.gov, "market", "setFeeBps", 501)  # the fee cap


def test_event_poller_respects_confirmation_depth(world: World) -> None:
    w, p = world, world.p
    poller = EventPoller(
        w.client, [p.market], from_block=w.client.block_number() + 1, confirmations=3
    )
    p.post_task(w.alice, w.task())
    assert [e.name for e in poller.poll()] == []  # not yet 3 blocks deep
    w.client.mine(3)
    events = poller.poll()
    assert [e.name for e in events] == ["TaskPosted"]
    assert events[0].args["taskId"] == 1
    w.client.mine(5)
    assert poller.poll() == []  # each block is read once


def test_concurrent_sends_from_one_key_all_land(world: World) -> None:
    w, p = world, world.p
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            p.transfer(w.alice, w.dave.address, i + 1)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    before = p.balance_of(w.dave.address)
    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert p.balance_of(w.dave.address) - before == sum(range(1, 9))


def test_commitment_matches_contract(world: World) -> None:
    w, p = world, world.p
    tid = p.post_task(w.alice, w.task()).value
    slot = p.claim(w.bob, tid).value
    r = Reveal(
        trace_root=b"\1" * 32, steps=STEPS, final_root=b"\2" * 32, manifest_cid="m", result_cid="r"
    )
    p.commit(w.bob, tid, slot, r)
    assert p.get_slot(tid, slot)["commitment"] == r.commitment(tid, slot, w.bob.address)
