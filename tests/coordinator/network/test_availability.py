"""Withheld checkpoints on a real network (issue #6): demanded on chain, served or slashed.

A solver whose committed manifest leaves out its interval checkpoints is
demanded one by a spot verifier; it does not serve it, the data window closes,
the verifier ends the slot and the withholder loses its bond. An honest solver
whose checkpoint a verifier could not fetch serves it on chain, the verifier
checks its interval from the served state, and the solver is paid: no false
slash. Every test ends with the token accounting.
"""

from __future__ import annotations

from coordinator.chain import SlotState
from coordinator.nodes import Referee, Solver, Verifier
from tests.coordinator.network.adversaries import StoreBlindVerifier, WithholdingSolver
from tests.coordinator.network.net import BOND, BUDGET, STAKE, Net


def _state(net: Net, tid: int) -> SlotState:
    return SlotState(net.p.get_slot(tid, 0)["state"])


def test_withheld_checkpoint_times_out_and_the_withholder_is_slashed(net: Net) -> None:
    w = net.add(WithholdingSolver)
    v = net.add(Verifier)
    net.add(Referee)
    tid = net.submit(steps=8, commit_interval=2, policy="spot:1", verifier_fee=10**18)
    net.drive(tid)
    assert _state(net, tid) == SlotState.SLASHED
    assert net.p.stake_of(w.address)["staked"] == STAKE - BOND
    log = v.log_path.read_text()
    assert "demanded the checkpoint of leaf" in log
    assert "withheld; solver slashed" in log
    assert net.p.slash_credit(v.address) + net.p.balance_of(v.address) > 0
    assert net.client.receipt(tid).outcome == "refunded"
    net.withdraw_everything()
    assert net.p.balance_of(net.chain.accounts[0].address) >= 100_000 * 10**18 - 10**18
    net.check_conservation()


def test_honest_solver_serves_a_demanded_checkpoint_and_is_paid(net: Net) -> None:
    s = net.add(Solver)
    v = net.add(StoreBlindVerifier)
    tid = net.submit(steps=8, commit_interval=2, policy="spot:1", verifier_fee=10**18)
    net.drive(tid)
    assert _state(net, tid) == SlotState.PAID
    assert net.p.stake_of(s.address)["staked"] == STAKE
    index = None
    for line in v.log_path.read_text().splitlines():
        if "spot check of interval" in line:
            index = int(line.split("interval ")[1].split(":")[0])
            assert line.endswith("agrees")
    assert index is not None
    served = s.log_path.read_text().count("served the checkpoint")
    assert served == (2 if index > 2 else 1)  # leaf 1, and the checked interval's start
    assert net.client.receipt(tid).outcome == "verified"
    assert net.client.receipt(tid).paid == BUDGET - BUDGET * 50 // 10_000
    net.withdraw_everything()
    net.check_conservation()
