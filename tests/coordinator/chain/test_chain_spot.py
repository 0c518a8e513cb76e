"""Spot checks on py-evm (issue #6): the draw, who can steer it, and what each check pays.

* the Python draw :func:`coordinator.chain.spot_index` equals TaskMarket.spotIndex,
  so the detection figures of ``bench/dispute.py`` are those of the chain's draw;
* a verifier cannot choose its interval: the index is a function of the seed
  and its address only, fixed before it commits; another interval's root does
  not verify, and an address checks a slot once;
* the solver cannot predict the draw when it commits: the seed is zero until
  the reveal, and the same commitment revealed in another block draws other
  intervals;
* every checked interval pays the verifier fee, no more checks than paid for
  are taken, and the unused fees go back to the client.
"""

from __future__ import annotations

import os
import random

import pytest
from eth_abi import encode
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.chain import ChainError, TaskParams, leaf_count, spot_index
from coordinator.dispute import (
    SpotPolicy,
    checks_needed,
    detection_theory,
    simulate_detection,
    spot_policy,
)
from tests.coordinator.chain.chain_helpers import E18, WINDOW, TraceModel, World, solve


def _int(v: int | None) -> int:
    assert v is not None
    return v


def _post(w: World, params: TaskParams) -> int:
    return _int(w.p.post_task(w.alice, params).value)


@pytest.mark.parametrize(("ci", "steps"), [(4, 32), (1, 5), (3, 100), (1, 2), (7, 7)])
def test_python_draw_equals_the_contracts(world: World, ci: int, steps: int) -> None:
    w, p = world, world.p
    tid = _post(w, w.task(commit_interval=ci, total_steps=steps, spot_checks=3,
                                      initial_root=TraceModel().leaf(0, ci, steps)))  # fmt: skip
    slot = solve(w, w.bob, tid, TraceModel(), ci, steps)
    with pytest.raises(ChainError, match="SeedNotReady"):  # the block after the reveal decides
        p.spot_index(tid, slot, w.dave.address)
    w.client.mine(2)  # a call sees blockhash(reveal + 1) from the block after that one
    seed = p.draw_seed(tid, slot)
    n = leaf_count(steps, ci)
    rng = random.Random(ci * 1000 + steps)
    drawn = set()
    for _ in range(40):
        v = "0x" + rng.randbytes(20).hex()
        i = p.spot_index(tid, slot, v)
        assert i == spot_index(seed, v, n)
        drawn.add(i)
    assert drawn <= set(range(1, n)) if n > 1 else drawn == {0}
    if n > 3:  # 40 draws over n - 1 intervals: not all the same one
        assert len(drawn) > 1


def test_a_verifier_cannot_choose_its_interval(world: World) -> None:
    w, p = world, world.p
    ci, steps = 4, 32
    tid = _post(w, w.task(spot_checks=2, verifier_fee=E18))
    slot = solve(w, w.bob, tid, TraceModel(), ci, steps)
    w.client.mine(2)  # the block after the reveal fixes the draw
    before = p.spot_index(tid, slot, w.dave.address)
    salt = os.urandom(32)
    p.spot_commit(w.dave, tid, slot, True, salt)
    idx = p.spot_index(tid, slot, w.dave.address)
    assert idx == before  # fixed by the seed and the address, not by the commitment
    tree = TraceModel().tree(ci, steps)
    for other in range(1, leaf_count(steps, ci)):
        if other == idx:
            continue
        with pytest.raises(ChainError, match="BadProof"):
            p.spot_reveal(w.dave, tid, slot, True, salt, TraceModel().leaf(other, ci, steps),
                          tree.proof(other).siblings)  # fmt: skip
    with pytest.raises(ChainError, match="AlreadyCommitted"):
        p.spot_commit(w.dave, tid, slot, False, os.urandom(32))
    r = p.spot_reveal(w.dave, tid, slot, True, salt, TraceModel().leaf(idx, ci, steps),
                      tree.proof(idx).siblings)  # fmt: skip
    assert r.event("SpotChecked")["index"] == idx
    with pytest.raises(ChainError, match="NoSpotCommit"):  # paid once per address
        p.spot_reveal(w.dave, tid, slot, True, salt, TraceModel().leaf(idx, ci, steps),
                      tree.proof(idx).siblings)  # fmt: skip


def test_the_solver_cannot_predict_the_draw_when_it_commits(world: World) -> None:
    """Nothing is drawn at the commit; at the reveal the draw is still open: it is fixed by the
    hash of the block after the reveal, which the solver cannot know when it sends the reveal."""
    w, p = world, world.p
    ci, steps = 1, 64
    tid = _post(w, w.task(commit_interval=ci, total_steps=steps, spot_checks=3,
                          initial_root=TraceModel().leaf(0, ci, steps)))  # fmt: skip
    slot = _int(p.claim(w.bob, tid).value)
    r, proof = TraceModel().reveal(ci, steps)
    p.commit(w.bob, tid, slot, r)
    assert p.get_slot(tid, slot)["seed"] == b"\0" * 32  # nothing to predict from yet
    rb = p.reveal(w.bob, tid, slot, r, proof).block_number
    at_reveal = p.get_slot(tid, slot)["seed"]
    with pytest.raises(ChainError, match="SeedNotReady"):  # the reveal's own block cannot tell
        p.draw_seed(tid, slot)
    with pytest.raises(ChainError, match="SeedNotReady"):  # nor can the block after it, yet
        p.spot_commit(w.dave, tid, slot, True, os.urandom(32))
    w.client.mine()  # block rb + 1
    p.fix_seed(w.gov, tid, slot)  # mined in block rb + 2: blockhash(rb + 1) is known now
    fixed = p.get_slot(tid, slot)["seed"]
    next_hash = bytes(w.client.w3.eth.get_block(rb + 1)["hash"])
    assert fixed == keccak(encode(["bytes32", "bytes32"], [at_reveal, next_hash]))
    assert fixed != at_reveal
    assert p.draw_seed(tid, slot) == fixed  # fixed for good: later blocks do not move it
    w.client.mine(3)
    assert p.draw_seed(tid, slot) == fixed


def test_each_checked_interval_pays_the_fee(world: World) -> None:
    w, p = world, world.p
    ci, steps, fee = 4, 32, 3 * E18
    tid = _post(w, w.task(spot_checks=3, verifier_fee=fee))
    slot = solve(w, w.bob, tid, TraceModel(), ci, steps)
    w.client.mine(2)
    tree = TraceModel().tree(ci, steps)
    checkers = [w.carol, w.dave, *w.referees]
    for v in checkers[:3]:
        salt = os.urandom(32)
        p.spot_commit(v, tid, slot, True, salt)
        i = p.spot_index(tid, slot, v.address)
        got = p.spot_reveal(v, tid, slot, True, salt, TraceModel().leaf(i, ci, steps),
                            tree.proof(i).siblings).event("SpotChecked")  # fmt: skip
        assert (got["index"], got["fee"]) == (i, fee)
        assert p.credit(v.address) == fee
    with pytest.raises(ChainError, match="SpotChecksExhausted"):
        p.spot_commit(checkers[3], tid, slot, True, os.urandom(32))
    w.client.advance_time(WINDOW + 1)
    p.finalize(w.gov, tid, slot)
    assert p.credit(w.alice.address) == 0  # every paid-for check was taken
    w.check_conservation()


# ---------------------------------------------------------------- the default policy


def test_the_default_policy_takes_44_checks() -> None:
    assert checks_needed() == 44
    assert detection_theory(0.10, 44) >= 0.99 > detection_theory(0.10, 43)


@settings(max_examples=200, deadline=None)
@given(steps=st.integers(min_value=1, max_value=10**8))
def test_default_policy_meets_the_target_from_440_steps(steps: int) -> None:
    pol = spot_policy(steps)
    assert pol.checks == 44
    assert pol.intervals == leaf_count(steps, pol.commit_interval) - 1
    assert pol.meets_target == (steps >= 440)
    if steps >= 440:
        assert pol.extra_compute <= 0.10
        assert pol.detection(0.10) >= 0.99
        # the largest such interval: one step longer leaves too few intervals
        assert SpotPolicy(steps, 44, pol.commit_interval + 1).extra_compute > 0.10
    else:
        assert pol.commit_interval == 1


@pytest.mark.parametrize(("f", "trials"), [(0.05, 300), (0.10, 500)])
def test_measured_detection_matches_theory(f: float, trials: int) -> None:
    r = simulate_detection(f, intervals=440, checks=44, trials=trials, seed=int(f * 100))
    assert abs(r.measured - r.theory) <= 4 * r.sigma + 1 / trials
