"""The network's nodes: solver, verifier and referee, each a loop of ``tick()`` over the chain."""

from coordinator.nodes._base import BENIGN, Node, NodeState, RunRecord
from coordinator.nodes._referee import Referee
from coordinator.nodes._solver import Killed, Solver, merge
from coordinator.nodes._verifier import Verifier

__all__ = [
    "BENIGN",
    "Killed",
    "Node",
    "NodeState",
    "Referee",
    "RunRecord",
    "Solver",
    "Verifier",
    "merge",
]
