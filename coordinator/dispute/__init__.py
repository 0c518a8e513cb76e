"""The dispute protocol off chain: level 1 and 2 moves, and the referee's step check."""

from coordinator.dispute._levels import PartyRun, trace_tree
from coordinator.dispute._referee import Judgement, judge_step
from coordinator.dispute._spot import (
    DetectionTrial,
    SpotPolicy,
    checks_needed,
    detection_theory,
    detection_without_replacement,
    simulate_detection,
    spot_policy,
)

__all__ = [
    "DetectionTrial",
    "Judgement",
    "PartyRun",
    "SpotPolicy",
    "checks_needed",
    "detection_theory",
    "detection_without_replacement",
    "judge_step",
    "simulate_detection",
    "spot_policy",
    "trace_tree",
]
