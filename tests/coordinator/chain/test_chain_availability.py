"""Checkpoint availability on py-evm (issue #6): demand, serve on chain, or be slashed.

A verifier demands the checkpoint behind a trace leaf; the solver serves its
state leaves' canonical encodings, from which TaskMarket recomputes the state
root (the normative tree) and proves it against the trace root. A solver that
does not serve before the data window closes loses its bond: part to the
demander, the rest burned; the client is refunded; no token is stranded.
"""

from __future__ import annotations

import pytest
import torch

from coordinator.chain import ChainError, Reveal, SlotState, TaskParams
from coordinator.dispute import state_encodings, trace_tree, tree_from_encodings
from ree import StateTree
from tests.coordinator.chain.chain_helpers import BOND, STAKE, WINDOW, World

DATA = 900  # the data window in these tests
CI, STEPS = 2, 8


def state(step: int, leaves: int = 4) -> StateTree:
    """A small real state: a few tensors and values whose root is a normative state root."""
    d: dict[str, object] = {"ree/step": step, "data/index": step * 8}
    for i in range(max(0, leaves - 2)):
        d[f"model/w{i}"] = torch.arange(3 + i, dtype=torch.float32) * (step + 1) + i
    return StateTree(dict(list(d.items())[:leaves]))


def roots(leaves: int = 4) -> list[bytes]:
    return [state(min(i * CI, STEPS), leaves).root_bytes for i in range(1 + STEPS // CI)]


def _int(v: int | None) -> int:
    assert v is not None
    return v


def post_and_reveal(w: World, leaves: int = 4) -> tuple[int, int]:
    p = w.p
    rs = roots(leaves)
    tid = _int(p.post_task(w.alice, TaskParams(
        spec_cid="bafkspec", budget=1000 * 10**18, initial_root=rs[0], commit_interval=CI,
        total_steps=STEPS, bond=BOND, claim_window=WINDOW, work_window=WINDOW,
        reveal_window=WINDOW, challenge_window=WINDOW)).value)  # fmt: skip
    slot = _int(p.claim(w.bob, tid).value)
    tree = trace_tree(rs)
    r = Reveal(trace_root=tree.root, steps=STEPS, final_root=rs[-1], manifest_cid="bafkman",
               result_cid="bafkres")  # fmt: skip
    p.commit(w.bob, tid, slot, r)
    p.reveal(w.bob, tid, slot, r, tree.proof(len(rs) - 1).siblings)
    return tid, slot


@pytest.fixture
def dw(world: World) -> World:
    world.p.govern(world.gov, "market", "setDataWindow", DATA)
    return world


@pytest.mark.parametrize("leaves", [1, 2, 3, 4, 5, 8, 13])
def test_served_checkpoint_resumes_the_window_and_frees_the_demander(
    dw: World, leaves: int
) -> None:
    w, p = dw, dw.p
    tid, slot = post_and_reveal(w, leaves)
    revealed_at = p.get_slot(tid, slot)["revealedAt"]
    index = 2
    p.demand_checkpoint(w.dave, tid, slot, index)
    assert SlotState(p.get_slot(tid, slot)["state"]) == SlotState.DEMANDED
    assert p.stake_of(w.dave.address)["locked"] == BOND
    with pytest.raises(ChainError, match="WrongState"):  # nothing settles while a demand is open
        p.finalize(w.gov, tid, slot)
    w.client.advance_time(100)
    rs = roots(leaves)
    tree = trace_tree(rs)
    with pytest.raises(
        ChainError, match="BadProof"
    ):  # another step's state is not the demanded one
        p.serve_checkpoint(w.bob, tid, slot, state_encodings(state(index * CI + 2, leaves)),
                           tree.proof(index).siblings)  # fmt: skip
    with pytest.raises(ChainError, match="NotSolver"):
        p.serve_checkpoint(w.carol, tid, slot, state_encodings(state(index * CI, leaves)),
                           tree.proof(index).siblings)  # fmt: skip
    paused = p.client.now()
    r = p.serve_checkpoint(w.bob, tid, slot, state_encodings(state(index * CI, leaves)),
                           tree.proof(index).siblings)  # fmt: skip
    served = r.event("CheckpointServed")
    assert served["stateRoot"] == rs[index]
    assert served["leaves"] == leaves
    s = p.get_slot(tid, slot)
    assert SlotState(s["state"]) == SlotState.REVEALED
    assert s["revealedAt"] - revealed_at >= p.client.now() - paused  # the window paused
    assert p.stake_of(w.dave.address)["locked"] == 0
    # anyone reads the served state back from the calldata, and it is the committed one
    assert tree_from_encodings(p.served_leaves(r.tx_hash)).root_bytes == rs[index]
    w.client.advance_time(WINDOW + 1)
    p.finalize(w.gov, tid, slot)
    assert p.stake_of(w.bob.address)["staked"] == STAKE  # an honest server is never slashed
    w.check_conservation()


def test_withheld_checkpoint_times_out_and_the_withholder_is_slashed(dw: World) -> None:
    w, p = dw, dw.p
    tid, slot = post_and_reveal(w)
    p.demand_checkpoint(w.dave, tid, slot, 3)
    deadline = p.get_demand(tid, slot)["deadline"]
    with pytest.raises(ChainError, match="TooEarly"):
        p.data_timeout(w.gov, tid, slot)
    w.client.advance_time(DATA + 1)
    assert p.client.now() >= deadline  # the next block is past it
    tree = trace_tree(roots())
    with pytest.raises(ChainError, match="TooLate"):
        p.serve_checkpoint(w.bob, tid, slot, state_encodings(state(3 * CI)), tree.proof(3).siblings)
    r = p.data_timeout(w.carol, tid, slot)
    assert r.event("CheckpointWithheld")["by"] == w.dave.address
    assert SlotState(p.get_slot(tid, slot)["state"]) == SlotState.SLASHED
    assert p.stake_of(w.bob.address)["staked"] == STAKE - BOND
    assert p.stake_of(w.dave.address)["locked"] == 0
    assert p.slash_credit(w.dave.address) == BOND // 2
    assert p.credit(w.alice.address) == 1000 * 10**18  # the client gets its budget back
    w.check_conservation()


def test_who_may_demand_what(dw: World) -> None:
    w, p = dw, dw.p
    tid, slot = post_and_reveal(w)
    with pytest.raises(ChainError, match="SelfChallenge"):
        p.demand_checkpoint(w.bob, tid, slot, 1)
    for bad in (0, 1 + STEPS // CI):
        with pytest.raises(ChainError, match="BadLeafIndex"):
            p.demand_checkpoint(w.dave, tid, slot, bad)
    with pytest.raises(ChainError):  # no free stake to bond: nobody demands for free
        p.demand_checkpoint(w.alice, tid, slot, 1)
    tree = trace_tree(roots())
    for k in range(4):  # MAX_DEMANDS per slot, each served
        p.demand_checkpoint(w.dave, tid, slot, 1 + k)
        p.serve_checkpoint(w.bob, tid, slot, state_encodings(state((1 + k) * CI)),
                           tree.proof(1 + k).siblings)  # fmt: skip
    with pytest.raises(ChainError, match="TooManyDemands"):
        p.demand_checkpoint(w.carol, tid, slot, 1)
    w.client.advance_time(WINDOW + 1)
    with pytest.raises(ChainError, match="TooLate"):
        p.demand_checkpoint(w.carol, tid, slot, 1)
    w.check_conservation()
