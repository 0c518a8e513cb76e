"""Moves in the last block before each timeout (issue #6), on the real contracts on py-evm.

For every deadline of the protocol (claim, commit, reveal, the challenge
window, spot commits, the data window, each kind of dispute move, the referee's
ruling and the appeal), a party whose transaction lands in the block whose
timestamp IS the deadline is accepted; the same move one block later is
refused with ``TooLate`` and the party loses what that timeout costs it. The
timeout itself cannot be called in the deadline's block (``TooEarly``).

The chain's next block timestamp is set exactly (``time_travel``), and each
check reads the mined block's timestamp back, so an off-by-one in a contract
(``>=`` for ``>``) fails these tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from coordinator.chain import ChainClient, ChainError, Outcome, SlotState, Stage, TxResult
from tests.coordinator.chain.chain_helpers import (
    BOND,
    STAKE,
    WINDOW,
    TraceModel,
    World,
    make_world,
    open_challenge,
    referee_of,
)

CI, STEPS = 4, 32
DATA = 900
BAD, GOOD = TraceModel(fault=13), TraceModel()


@pytest.fixture(scope="module")
def base() -> World:
    w = make_world(ChainClient.in_process())
    w.p.govern(w.gov, "market", "setDataWindow", DATA)
    return w


@pytest.fixture
def w(base: World) -> Iterator[World]:
    snap = base.client.snapshot()
    try:
        yield base
    finally:
        base.client.revert(snap)


def at(w: World, ts: int) -> None:
    """Make the next block's timestamp exactly ``ts``."""
    assert ts > w.client.now(), "cannot go back in time"
    w.client.w3.provider.ethereum_tester.time_travel(ts)  # type: ignore[attr-defined]


def mined_at(w: World, r: TxResult) -> int:
    return int(w.client.w3.eth.get_block(r.block_number)["timestamp"])


def last_block(w: World, deadline: int, move: Callable[[], TxResult],
               late: Callable[[], None], timeout: Callable[[], TxResult] | None, on_time: bool) -> None:  # fmt: skip
    """``move`` in the deadline's block is accepted (``on_time``); one block later it is refused,
    and ``late`` checks what the late party lost after ``timeout`` (which cannot run at the deadline).

    The two cases run in separate tests from the fixture's snapshot: py-evm cannot revert to a
    snapshot taken after a block that read ``prevrandao`` (it re-executes it and the roots differ).
    """
    if on_time:
        at(w, deadline)
        if timeout is not None:
            with pytest.raises(ChainError, match="TooEarly"):
                timeout()  # a refused call mines nothing: the next block is still the deadline's
        assert mined_at(w, move()) == deadline
    else:
        at(w, deadline + 1)
        with pytest.raises(ChainError, match="TooLate"):
            move()
        if timeout is not None:
            assert mined_at(w, timeout()) == deadline + 1
        late()
    w.check_conservation()


@pytest.fixture(params=[True, False], ids=["last-block", "one-block-late"])
def on_time(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _int(v: int | None) -> int:
    assert v is not None
    return v


def post(w: World) -> int:
    return _int(w.p.post_task(w.alice, w.task()).value)


def task_clock(w: World, tid: int) -> int:
    return int(w.p.get_task(tid)["postedAt"])


def reveal(w: World, tid: int, model: TraceModel | None = None) -> int:
    model = model or TraceModel()
    slot = _int(w.p.claim(w.bob, tid).value)
    r, proof = model.reveal(CI, STEPS)
    w.p.commit(w.bob, tid, slot, r)
    w.p.reveal(w.bob, tid, slot, r, proof)
    return slot


def slashed(w: World, who: Any) -> bool:
    return w.p.stake_of(who.address)["staked"] == STAKE - BOND


# ---------------------------------------------------------------- the market's deadlines


def test_claim(w: World, on_time: bool) -> None:
    tid = post(w)
    d = task_clock(w, tid) + WINDOW

    def late() -> None:
        assert SlotState(w.p.get_slot(tid, 0)["state"]) == SlotState.EXPIRED
        assert w.p.credit(w.alice.address) == 1000 * 10**18

    last_block(
        w, d, lambda: w.p.claim(w.bob, tid), late, lambda: w.p.timeout_slot(w.gov, tid, 0), on_time
    )


def test_commit(w: World, on_time: bool) -> None:
    tid = post(w)
    slot = _int(w.p.claim(w.bob, tid).value)
    d = task_clock(w, tid) + 2 * WINDOW
    r, _ = TraceModel().reveal(CI, STEPS)

    def late() -> None:
        assert SlotState(w.p.get_slot(tid, slot)["state"]) == SlotState.SLASHED
        assert slashed(w, w.bob)

    last_block(w, d, lambda: w.p.commit(w.bob, tid, slot, r), late,
               lambda: w.p.timeout_slot(w.gov, tid, slot), on_time)  # fmt: skip


def test_reveal(w: World, on_time: bool) -> None:
    tid = post(w)
    slot = _int(w.p.claim(w.bob, tid).value)
    r, proof = TraceModel().reveal(CI, STEPS)
    w.p.commit(w.bob, tid, slot, r)
    d = task_clock(w, tid) + 3 * WINDOW

    def late() -> None:
        assert SlotState(w.p.get_slot(tid, slot)["state"]) == SlotState.SLASHED
        assert slashed(w, w.bob)

    last_block(w, d, lambda: w.p.reveal(w.bob, tid, slot, r, proof), late,
               lambda: w.p.timeout_slot(w.gov, tid, slot), on_time)  # fmt: skip


def test_challenge_window(w: World, on_time: bool) -> None:
    tid = post(w)
    slot = reveal(w, tid, BAD)
    d = int(w.p.get_slot(tid, slot)["revealedAt"]) + WINDOW

    def late() -> None:  # too late to challenge: the wrong result is final, and paid
        assert SlotState(w.p.get_slot(tid, slot)["state"]) == SlotState.PAID

    t, ls = GOOD.tree(CI, STEPS), GOOD.leaves(CI, STEPS)
    last_block(w, d, lambda: w.p.challenge(w.dave, tid, slot, t.root, ls[-1], t.proof(len(ls) - 1).siblings),
               late, lambda: w.p.finalize(w.gov, tid, slot), on_time)  # fmt: skip


def test_spot_commit(w: World, on_time: bool) -> None:
    tid = _int(w.p.post_task(w.alice, w.task(spot_checks=1, verifier_fee=10**18)).value)
    slot = reveal(w, tid)
    d = int(w.p.get_slot(tid, slot)["revealedAt"]) + WINDOW

    def late() -> None:  # the unused check's fee goes back to the client
        assert w.p.credit(w.alice.address) == 10**18

    last_block(w, d, lambda: w.p.spot_commit(w.dave, tid, slot, True, os.urandom(32)), late,
               lambda: w.p.finalize(w.gov, tid, slot), on_time)  # fmt: skip


def test_data_window(w: World, on_time: bool) -> None:
    from coordinator.dispute import state_encodings, trace_tree
    from tests.coordinator.chain.test_chain_availability import post_and_reveal, roots, state

    tid, slot = post_and_reveal(w)
    w.p.demand_checkpoint(w.dave, tid, slot, 2)
    d = int(w.p.get_demand(tid, slot)["deadline"])
    leaves, proof = state_encodings(state(4)), trace_tree(roots()).proof(2).siblings

    def late() -> None:
        assert SlotState(w.p.get_slot(tid, slot)["state"]) == SlotState.SLASHED
        assert slashed(w, w.bob)
        assert w.p.slash_credit(w.dave.address) == BOND // 2

    last_block(w, d, lambda: w.p.serve_checkpoint(w.bob, tid, slot, leaves, proof), late,
               lambda: w.p.data_timeout(w.gov, tid, slot), on_time)  # fmt: skip


# ---------------------------------------------------------------- the dispute's deadlines


def dispute_at(w: World, stop: Callable[[dict[str, Any]], bool]) -> int:
    """A dispute between a wrong defender (bob) and a right challenger (dave), played until ``stop``."""
    tid = post(w)
    slot = reveal(w, tid, BAD)
    did = open_challenge(w, w.dave, tid, slot, GOOD, CI, STEPS)
    for _ in range(100):
        d = w.p.get_dispute(did)
        if stop(d):
            return did
        for acct, model in ((w.bob, BAD), (w.dave, GOOD)):
            move_for(w, did, d, acct, model)()
    raise AssertionError("the dispute never reached the stage")


def move_for(
    w: World, did: int, d: dict[str, Any], acct: Any, model: TraceModel
) -> Callable[[], TxResult]:
    """The honest-to-``model`` move of ``acct`` in the dispute's current stage."""
    stage, q = Stage(d["stage"]), d["query"]
    if stage == Stage.BISECT and d["level"] == 1:
        tree, leaf = model.tree(CI, STEPS), model.leaf(q, CI, STEPS)
        return lambda: w.p.respond(acct, did, leaf, tree.proof(q).siblings)
    if stage == Stage.BISECT:
        tree = model.step_tree(d["interval"], CI, STEPS)
        leaf = model.step_leaves(d["interval"], CI, STEPS)[q]
        return lambda: w.p.respond(acct, did, leaf, tree.proof(q).siblings)
    if stage == Stage.STEP_ROOTS:
        t = model.step_tree(d["interval"], CI, STEPS)
        return lambda: w.p.post_step_root(acct, did, t.root, t.proof(0).siblings,
                                          t.proof(t.n - 1).siblings)  # fmt: skip
    if stage == Stage.OP_TRACES:
        return lambda: w.p.post_op_trace(acct, did, "bafkoptrace", os.urandom(32))
    raise AssertionError(f"no party move in stage {stage}")


MOVES = {
    "bisect-level-1": lambda d: Stage(d["stage"]) == Stage.BISECT and d["level"] == 1,
    "step-roots": lambda d: Stage(d["stage"]) == Stage.STEP_ROOTS,
    "bisect-level-2": lambda d: Stage(d["stage"]) == Stage.BISECT and d["level"] == 2,
    "op-traces": lambda d: Stage(d["stage"]) == Stage.OP_TRACES,
}


@pytest.mark.parametrize("stage", list(MOVES))
@pytest.mark.parametrize("late_party", ["defender", "challenger"])
def test_dispute_move(w: World, stage: str, late_party: str, on_time: bool) -> None:
    did = dispute_at(w, MOVES[stage])
    d = w.p.get_dispute(did)
    (late_acct, late_model), (early_acct, early_model) = (
        ((w.bob, BAD), (w.dave, GOOD))
        if late_party == "defender"
        else ((w.dave, GOOD), (w.bob, BAD))
    )
    move_for(w, did, d, early_acct, early_model)()
    d = w.p.get_dispute(did)

    def late() -> None:
        got = Outcome(w.p.get_dispute(did)["outcome"])
        assert got == (Outcome.CHALLENGER_WON if late_party == "defender" else Outcome.DEFENDER_WON)
        assert slashed(w, late_acct)

    last_block(w, int(d["deadline"]), move_for(w, did, d, late_acct, late_model), late,
               lambda: w.p.dispute_timeout(w.gov, did), on_time)  # fmt: skip


def test_referee_ruling(w: World, on_time: bool) -> None:
    did = dispute_at(w, lambda d: Stage(d["stage"]) == Stage.RULING)
    d = w.p.get_dispute(did)
    ref = referee_of(w, did)

    def late() -> None:  # the late referee is slashed and another one drawn
        d2 = w.p.get_dispute(did)
        assert Stage(d2["stage"]) == Stage.RULING
        assert d2["referee"] != ref.address
        assert w.p.stake_of(ref.address)["staked"] < STAKE

    last_block(w, int(d["deadline"]), lambda: w.p.rule(ref, did, False), late,
               lambda: w.p.dispute_timeout(w.gov, did), on_time)  # fmt: skip


def test_appeal(w: World, on_time: bool) -> None:
    did = dispute_at(w, lambda d: Stage(d["stage"]) == Stage.RULING)
    w.p.rule(referee_of(w, did), did, True)  # a wrong first verdict: the defender lied
    d = w.p.get_dispute(did)

    def late() -> None:  # no appeal in time: the first verdict stands
        assert Outcome(w.p.get_dispute(did)["outcome"]) == Outcome.DEFENDER_WON

    last_block(w, int(d["deadline"]), lambda: w.p.appeal(w.dave, did), late,
               lambda: w.p.dispute_timeout(w.gov, did), on_time)  # fmt: skip
