"""The dispute protocol off chain: level 1 and 2 moves, and the referee's step check."""

from coordinator.dispute._availability import (
    checkpoint_encodings,
    checkpoint_from_encodings,
    decode_leaf,
    state_encodings,
    tree_from_encodings,
)
from coordinator.dispute._levels import PartyRun, trace_tree
from coordinator.dispute._ops import (
    NO_OP,
    OpJudgement,
    OpLevelError,
    fetch_op_trace,
    first_divergence,
    inputs_max_bytes,
    judge_ops,
    put_op_inputs,
    put_op_trace,
)
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
    "NO_OP",
    "DetectionTrial",
    "Judgement",
    "OpJudgement",
    "OpLevelError",
    "PartyRun",
    "SpotPolicy",
    "checkpoint_encodings",
    "checkpoint_from_encodings",
    "decode_leaf",
    "checks_needed",
    "detection_theory",
    "detection_without_replacement",
    "fetch_op_trace",
    "first_divergence",
    "inputs_max_bytes",
    "judge_ops",
    "judge_step",
    "put_op_inputs",
    "put_op_trace",
    "simulate_detection",
    "spot_policy",
    "state_encodings",
    "trace_tree",
    "tree_from_encodings",
]
