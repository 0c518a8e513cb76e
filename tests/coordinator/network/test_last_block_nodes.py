"""Real nodes that move in the last block before each deadline (issue #6), on py-evm.

The solver sends its commit, its reveal and every dispute move in the block
whose timestamp is the deadline: each is accepted, and the task ends on its
merits (an honest last-minute solver is paid; a wrong one loses the dispute
it played to the end, by the referee's ruling, not by a timeout). The same
solver one block late is refused and loses its bond by the timeout.
"""

from __future__ import annotations

from coordinator.chain import Outcome, SlotState
from coordinator.nodes import Referee, Verifier
from tests.coordinator.network.adversaries import LastBlockSolver
from tests.coordinator.network.net import BOND, STAKE, Net


def test_honest_last_block_solver_is_paid(net: Net) -> None:
    s = net.add(LastBlockSolver, k=0)
    tid = net.submit(steps=8, commit_interval=2)
    net.drive(tid)
    assert SlotState(net.p.get_slot(tid, 0)["state"]) == SlotState.PAID
    moves = s.p.moves
    assert [m[0] for m in moves] == ["commit", "reveal"]
    assert all(ts == deadline for _, deadline, ts in moves)  # mined exactly at the deadline
    net.withdraw_everything()
    net.check_conservation()


def test_wrong_last_block_solver_plays_every_move_and_loses_on_the_merits(net: Net) -> None:
    bad = net.add(LastBlockSolver, k=3)
    net.add(Verifier)
    net.add(Referee)
    net.add(Referee)
    tid = net.submit(steps=8, commit_interval=2)
    net.drive(tid)
    moves = bad.p.moves
    kinds = {m[0] for m in moves}
    assert {"commit", "reveal", "respond", "op trace"} <= kinds
    assert all(ts == deadline for _, deadline, ts in moves)
    n = int(net.p.client.call(net.p.game.functions.disputeCount()))
    d = next(net.p.get_dispute(i) for i in range(1, n + 1)
             if net.p.get_dispute(i)["defender"] == bad.address)  # fmt: skip
    assert d["step"] == 3  # the dispute ran to the referee: every last-block move counted
    assert Outcome(d["outcome"]) == Outcome.CHALLENGER_WON
    assert net.p.stake_of(bad.address)["staked"] == STAKE - BOND
    net.withdraw_everything()
    net.check_conservation()


def test_one_block_late_solver_is_refused_and_slashed(net: Net) -> None:
    s = net.add(LastBlockSolver, k=0, late=1)
    net.client.reopen = False  # the client ends the slot instead of reopening it for another solver
    tid = net.submit(steps=8, commit_interval=2)
    net.drive(tid)
    assert SlotState(net.p.get_slot(tid, 0)["state"]) == SlotState.SLASHED
    assert net.p.stake_of(s.address)["staked"] == STAKE - BOND
    assert ("commit", "TooLate") in s.p.refused
    assert not s.p.moves  # nothing it sent one block late was accepted
    net.withdraw_everything()
    net.check_conservation()
