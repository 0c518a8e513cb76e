"""The Verde dispute game end to end on py-evm: three levels, referee, appeal, signed verdicts, timeouts."""

from __future__ import annotations

import math

import pytest

from coordinator.chain import ChainError, Outcome, SlotState, Stage
from tests.coordinator.chain.chain_helpers import (
    BOND,
    STAKE,
    WINDOW,
    TraceModel,
    World,
    open_challenge,
    play_to_referee,
    referee_of,
    solve,
)

CI, STEPS = 4, 32
HONEST, WRONG = (
    TraceModel(),
    TraceModel(fault=14),
)  # wrong from step 14: interval 4, step 2 inside it


def _dispute(
    w: World, solver_model: TraceModel, challenger_model: TraceModel
) -> tuple[int, int, int]:
    tid = w.p.post_task(w.alice, w.task()).value
    slot = solve(w, w.bob, tid, solver_model, CI, STEPS)
    did = open_challenge(w, w.carol, tid, slot, challenger_model, CI, STEPS)
    return tid, slot, did


def test_three_levels_find_the_first_wrong_step_within_the_round_bound(world: World) -> None:
    w = world
    tid, slot, did = _dispute(w, WRONG, HONEST)
    d = play_to_referee(w, did, w.bob, w.carol, WRONG, HONEST, CI, STEPS)
    assert Stage(d["stage"]) == Stage.RULING
    assert d["interval"] == 3  # leaves 0..3 agree (steps <= 12), leaf 4 (step 16) differs
    assert d["step"] == 14
    bound = math.ceil(math.log2(STEPS // CI)) + math.ceil(math.log2(CI)) + 2
    assert d["rounds"] <= bound
    assert w.p.client.call(w.p.game.functions.roundBound(STEPS // CI + 1, CI)) == bound
    assert d["referee"] not in (w.alice.address, w.bob.address, w.carol.address)
    ref = referee_of(w, did)
    w.p.rule(ref, did, False)
    w.client.advance_time(601)
    w.p.dispute_timeout(w.gov, did)  # the appeal window passed: final
    assert Outcome(w.p.get_dispute(did)["outcome"]) == Outcome.CHALLENGER_WON
    assert SlotState(w.p.get_slot(tid, slot)["state"]) == SlotState.SLASHED
    assert w.p.stake_of(w.bob.address)["staked"] == STAKE - BOND
    assert w.p.slash_credit(w.carol.address) == BOND // 2
    assert w.p.stake_of(w.carol.address)["locked"] == 0
    assert w.p.stake_of(ref.address)["locked"] == 0
    assert w.p.credit(w.alice.address) == 1000 * 10**18  # refunded
    w.check_conservation()


def test_honest_solver_wins_and_is_paid(world: World) -> None:
    w = world
    tid, slot, did = _dispute(w, HONEST, WRONG)
    play_to_referee(w, did, w.bob, w.carol, HONEST, WRONG, CI, STEPS)
    w.p.rule(referee_of(w, did), did, True)
    w.client.advance_time(601)
    w.p.dispute_timeout(w.gov, did)
    assert w.p.stake_of(w.carol.address)["staked"] == STAKE - BOND
    w.client.advance_time(WINDOW)
    w.p.finalize(w.gov, tid, slot)
    assert w.p.stake_of(w.bob.address) == {
        "staked": STAKE,
        "locked": 0,
        "unbonding": 0,
        "unbond_at": 0,
    }
    w.check_conservation()


def test_appeal_overturns_and_slashes_the_first_referee(world: World) -> None:
    w = world
    _, _, did = _dispute(w, HONEST, WRONG)
    play_to_referee(w, did, w.bob, w.carol, HONEST, WRONG, CI, STEPS)
    first = referee_of(w, did)
    w.p.rule(first, did, False)  # wrong verdict
    with pytest.raises(ChainError, match="NotLoser"):
        w.p.appeal(w.carol, did)
    w.p.appeal(w.bob, did)
    second = referee_of(w, did)
    assert second.address != first.address
    w.p.rule(second, did, True)
    d = w.p.get_dispute(did)
    assert Outcome(d["outcome"]) == Outcome.DEFENDER_WON
    assert w.p.stake_of(first.address)["staked"] == STAKE - w.p.client.call(
        w.p.staking.functions.refereeBond()
    )
    assert w.p.stake_of(second.address)["locked"] == 0
    w.check_conservation()


def test_signed_verdict_is_accepted(world: World) -> None:
    w = world
    _, _, did = _dispute(w, WRONG, HONEST)
    play_to_referee(w, did, w.bob, w.carol, WRONG, HONEST, CI, STEPS)
    ref = referee_of(w, did)
    deadline = w.client.now() + 100
    sig = w.p.sign_verdict(ref, did, False, deadline)
    w.p.rule_by_sig(w.dave, did, False, deadline, sig)  # anyone relays it
    assert Stage(w.p.get_dispute(did)["stage"]) == Stage.APPEALABLE


@pytest.mark.parametrize("silent", ["defender", "challenger", "both"])
def test_a_missed_move_loses(world: World, silent: str) -> None:
    w = world
    tid, slot, did = _dispute(w, WRONG, HONEST)
    d = w.p.get_dispute(did)
    q = d["query"]
    if silent not in ("defender", "both"):
        w.p.respond(w.bob, did, WRONG.leaf(q, CI, STEPS), WRONG.tree(CI, STEPS).proof(q).siblings)
    if silent not in ("challenger", "both"):
        w.p.respond(
            w.carol, did, HONEST.leaf(q, CI, STEPS), HONEST.tree(CI, STEPS).proof(q).siblings
        )
    with pytest.raises(ChainError, match="TooEarly"):
        w.p.dispute_timeout(w.gov, did)
    w.client.advance_time(601)
    w.p.dispute_timeout(w.gov, did)
    want = {
        "defender": Outcome.CHALLENGER_WON,
        "challenger": Outcome.DEFENDER_WON,
        "both": Outcome.BOTH_LOST,
    }[silent]
    assert Outcome(w.p.get_dispute(did)["outcome"]) == want
    w.check_conservation()


def test_round_bound_for_two_to_the_twenty_steps(world: World) -> None:
    """2^20 steps with commit interval 2^10: 1024 intervals -> at most 10 + 10 + 2 rounds."""
    fn = world.p.game.functions.roundBound(2**10 + 1, 2**10)
    assert world.p.client.call(fn) == 22
