"""The dispute protocol off chain: level 1 and 2 moves, and the referee's step check."""

from coordinator.dispute._levels import PartyRun, trace_tree
from coordinator.dispute._referee import Judgement, judge_step

__all__ = ["Judgement", "PartyRun", "judge_step", "trace_tree"]
