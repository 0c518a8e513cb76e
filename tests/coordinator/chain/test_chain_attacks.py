"""Attacks on the contracts, one test per attack (DESIGN.md, "What must never happen")."""

from __future__ import annotations

import pytest
from eth_utils import function_signature_to_4byte_selector

from coordinator.chain import ChainClient, ChainError, Outcome, Stage, load_artifact
from tests.coordinator.chain.chain_helpers import (
    BOND,
    E18,
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
HONEST, WRONG = TraceModel(), TraceModel(fault=14)
REENTRANT = function_signature_to_4byte_selector("ReentrancyGuardReentrantCall()")


# ---------------------------------------------------------------- reentrancy


@pytest.mark.parametrize("target", ["market.withdraw", "staking.withdrawUnstaked"])
def test_reentrancy_through_a_token_receiver_fails(target: str) -> None:
    """A token that calls the recipient back (ERC-777 style) cannot make a withdrawal pay twice."""
    c = ChainClient.in_process()
    me = c.funder
    token = c.deploy(me, load_artifact("HookToken", test=True))
    staking = c.deploy(me, load_artifact("Staking"), token.address, me.address)
    market = c.deploy(me, load_artifact("TaskMarket"), token.address, staking.address, me.address)
    game = c.deploy(me, load_artifact("DisputeGame"), staking.address, market.address, me.address)
    c.transact(me, staking.functions.wire(market.address, game.address), "wire")
    c.transact(me, market.functions.wire(game.address), "wire")
    c.transact(me, staking.functions.setUnbondingDelay(3600), "delay")
    c.transact(me, game.functions.setTimeouts(10, 10, 10, 10), "timeouts")
    c.transact(me, market.functions.setDataWindow(10), "data window")
    attacker = c.deploy(me, load_artifact("ReentrantReceiver", test=True))

    def ex(contract: object, fn: str, *args: object) -> None:
        data = getattr(contract, "functions")[fn](*args)._encode_transaction_data()  # noqa: B009
        c.transact(me, attacker.functions.exec(contract.address, data), f"attacker {fn}")  # type: ignore[attr-defined]

    amount = 1000
    c.transact(me, token.functions.mint(attacker.address, amount), "mint")
    if target == "market.withdraw":
        ex(token, "approve", market.address, amount)
        params = ("cid", amount, b"\0" * 32, 1, 1, 10, 10, 10, 60, 1, 0, 1, 0)
        ex(market, "postTask", params)
        c.advance_time(11)
        c.transact(me, market.functions.timeoutSlot(1, 0), "timeout")  # refund -> attacker's credit
        reentry = market.functions.withdraw()._encode_transaction_data()
        victim, final = market, "withdraw"
    else:
        ex(token, "approve", staking.address, amount)
        ex(staking, "stake", amount)
        ex(staking, "requestUnstake", amount)
        c.advance_time(3601)
        reentry = staking.functions.withdrawUnstaked()._encode_transaction_data()
        victim, final = staking, "withdrawUnstaked"
    c.transact(me, token.functions.mint(victim.address, 5 * amount), "other people's money")
    ex(token, "setHooked", True)
    c.transact(me, attacker.functions.arm(victim.address, reentry), "arm")
    ex(victim, final)
    assert c.call(attacker.functions.attempts()) == 1
    assert c.call(attacker.functions.successes()) == 0
    assert bytes(c.call(attacker.functions.lastError()))[:4] == REENTRANT
    assert c.call(token.functions.balanceOf(attacker.address)) == amount  # paid once, not twice
    assert c.call(token.functions.balanceOf(victim.address)) == 5 * amount


# ---------------------------------------------------------------- verdict replay


def _ruling(w: World, solver_model: TraceModel = WRONG) -> tuple[int, int]:
    tid = w.p.post_task(w.alice, w.task()).value
    slot = solve(w, w.bob, tid, solver_model, CI, STEPS)
    challenger_model = WRONG if solver_model == HONEST else HONEST
    did = open_challenge(w, w.carol, tid, slot, challenger_model, CI, STEPS)
    play_to_referee(w, did, w.bob, w.carol, solver_model, challenger_model, CI, STEPS)
    return tid, did


REPLAYS = ["other dispute", "other chain", "other contract", "after deadline"]


@pytest.mark.parametrize("replay", REPLAYS)
def test_replayed_verdict_is_rejected(world: World, replay: str) -> None:
    w = world
    w.p.leave_referee_pool(w.referees[1])  # one referee, so both disputes draw the same one
    _, did_a = _ruling(w)
    ref = referee_of(w, did_a)
    now = w.client.now()
    if replay == "other dispute":
        _, did_b = _ruling(w)  # another task, another dispute
        assert referee_of(w, did_b).address == ref.address
        sig, target, deadline = w.p.sign_verdict(ref, did_a, False, now + 500), did_b, now + 500
    elif replay == "other chain":
        deadline = now + 500
        sig, target = (
            w.p.sign_verdict(ref, did_a, False, deadline, chain_id=w.client.chain_id + 1),
            did_a,
        )
    elif replay == "other contract":
        deadline = now + 500
        sig, target = (
            w.p.sign_verdict(ref, did_a, False, deadline, contract=w.p.market.address),
            did_a,
        )
    else:
        deadline = now + 5
        sig, target = w.p.sign_verdict(ref, did_a, False, deadline), did_a
        w.client.advance_time(10)
    with pytest.raises(ChainError, match="NotReferee|SignatureExpired"):
        w.p.rule_by_sig(w.dave, target, False, deadline, sig)
    assert Stage(w.p.get_dispute(target)["stage"]) == Stage.RULING


# ---------------------------------------------------------------- copied reveal


def test_copied_commitment_cannot_be_revealed_by_the_copier(world: World) -> None:
    w = world
    tid = w.p.post_task(w.alice, w.task(replicas=2)).value
    s0, s1 = w.p.claim(w.bob, tid).value, w.p.claim(w.carol, tid).value
    r, proof = HONEST.reveal(CI, STEPS)
    w.p.commit(w.bob, tid, s0, r)
    stolen = r.commitment(tid, s0, w.bob.address)
    w.client.transact(w.carol, w.p.market.functions.commit(tid, s1, stolen), "copy commit")
    w.p.reveal(w.bob, tid, s0, r, proof)
    with pytest.raises(ChainError, match="CommitmentMismatch"):
        w.p.reveal(w.carol, tid, s1, r, proof)


def test_no_commit_after_reveals_open(world: World) -> None:
    w = world
    tid = w.p.post_task(w.alice, w.task(replicas=2)).value
    s0, s1 = w.p.claim(w.bob, tid).value, w.p.claim(w.carol, tid).value
    r, proof = HONEST.reveal(CI, STEPS)
    w.p.commit(w.bob, tid, s0, r)
    w.client.advance_time(2 * WINDOW + 1)  # the commit deadline passes: reveals open
    w.p.reveal(w.bob, tid, s0, r, proof)
    copied, _ = HONEST.reveal(CI, STEPS)
    with pytest.raises(ChainError, match="TooLate"):
        w.p.commit(w.carol, tid, s1, copied)


# ---------------------------------------------------------------- unstake to escape


def test_unstake_cannot_escape_a_pending_slash(world: World) -> None:
    w = world
    tid = w.p.post_task(w.alice, w.task()).value
    w.p.claim(w.bob, tid)
    with pytest.raises(ChainError, match="InsufficientFreeStake"):
        w.p.request_unstake(w.bob, STAKE)
    w.p.request_unstake(w.bob, STAKE - BOND)
    unbond_at = w.p.stake_of(w.bob.address)["unbond_at"]
    w.client.advance_time(2 * WINDOW + 1)
    w.p.timeout_slot(w.gov, tid, 0)  # never committed: slashed
    acct = w.p.stake_of(w.bob.address)
    assert acct == {"staked": 0, "locked": 0, "unbonding": STAKE - BOND, "unbond_at": unbond_at}
    with pytest.raises(ChainError, match="StillUnbonding"):
        w.p.withdraw_unstaked(w.bob)
    w.client.advance_time(14 * 86400)
    before = w.p.balance_of(w.bob.address)
    w.p.withdraw_unstaked(w.bob)
    assert w.p.balance_of(w.bob.address) - before == STAKE - BOND
    w.check_conservation()


# ---------------------------------------------------------------- absent referee


def test_referee_that_never_rules_is_slashed_and_replaced(world: World) -> None:
    w = world
    _, did = _ruling(w)
    lazy = referee_of(w, did)
    w.client.advance_time(601)
    w.p.dispute_timeout(w.gov, did)
    bond = w.p.client.call(w.p.staking.functions.refereeBond())
    assert w.p.stake_of(lazy.address) == {
        "staked": STAKE - bond,
        "locked": 0,
        "unbonding": 0,
        "unbond_at": 0,
    }
    nxt = referee_of(w, did)
    assert nxt.address != lazy.address
    w.p.rule(nxt, did, False)
    w.check_conservation()


def test_no_referee_at_all_ends_with_no_contest_and_no_stranded_bond(world: World) -> None:
    w = world
    for r in w.referees:
        w.p.leave_referee_pool(r)
    tid, did = _ruling(w, solver_model=HONEST)
    assert Stage(w.p.get_dispute(did)["stage"]) == Stage.AWAIT_REFEREE
    with pytest.raises(ChainError, match="NoRefereeAvailable"):
        w.p.dispute_timeout(w.gov, did)
    w.client.advance_time(601)
    w.p.dispute_timeout(w.gov, did)
    assert Outcome(w.p.get_dispute(did)["outcome"]) == Outcome.NO_CONTEST
    assert w.p.stake_of(w.carol.address)["locked"] == 0
    w.client.advance_time(WINDOW)
    w.p.finalize(w.gov, tid, 0)
    assert w.p.stake_of(w.bob.address)["locked"] == 0
    w.check_conservation()


# ---------------------------------------------------------------- boundary amounts


@pytest.mark.parametrize("amount", [0, 1, 2**256 - 1])
def test_boundary_stake(world: World, amount: int) -> None:
    w = world
    if amount == 0:
        with pytest.raises(ChainError, match="ZeroAmount"):
            w.p.stake(w.alice, 0)
    elif amount == 1:
        w.p.stake(w.alice, 1)
        assert w.p.stake_of(w.alice.address)["staked"] == 1
    else:
        with pytest.raises(ChainError, match="ERC20InsufficientBalance"):
            w.p.stake(w.alice, amount)
    w.check_conservation()


@pytest.mark.parametrize("budget", [0, 1, 2**255])
def test_boundary_budget(world: World, budget: int) -> None:
    w = world
    if budget == 0:
        with pytest.raises(ChainError, match="ZeroAmount"):
            w.p.post_task(w.alice, w.task(budget=0))
        return
    w.p.mint(w.gov, w.alice.address, budget)
    tid = w.p.post_task(w.alice, w.task(budget=budget)).value
    slot = solve(w, w.bob, tid, HONEST, CI, STEPS)
    w.client.advance_time(WINDOW + 1)
    paid = w.p.finalize(w.gov, tid, slot).event("Paid")
    assert paid["pay"] + paid["feeBurned"] == budget
    assert paid["feeBurned"] == budget * 50 // 10_000
    w.p.withdraw(w.bob)
    w.check_conservation()


def test_fee_rate_is_capped(world: World) -> None:
    with pytest.raises(ChainError, match="ParameterOutOfRange"):
        world.p.govern(world.gov, "market", "setFeeBps", 10_000)
    assert world.p.client.call(world.p.market.functions.MAX_FEE_BPS()) == 500
    assert E18  # keep the import meaningful for readers: amounts are in wei
