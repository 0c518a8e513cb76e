"""Strict mode: training steps that give the same bits on every CPU and GPU.

DESIGN.md, "The REE: two modes". :class:`StrictMode` is a TorchDispatchMode that
swaps each aten op for a reproducible implementation, runs exact ops natively,
and refuses everything else with :class:`~ree._errors.NondeterminismError`.
:func:`enter_strict` is the hook ``ree.deterministic(mode="strict")`` uses, and
:func:`current_mode` gives integrations the active mode's generator, whose state
is the ``rng/ree`` leaf of a strict root. The reference workloads
(:func:`reference_roots`) let any machine check that it reproduces strict mode.

Scope: float32 training; matmuls, 1-d and 2-d convolutions (grouped, depthwise
and transposed), sums, softmax, losses, layer and batch norm (with running
stats), activations, dropout, initialisers and the SGD/Adam/AdamW kernels in all
three forms. Python-side float math that torch does on the host (Adam's
``beta**step``, LR schedules) runs outside the mode, on the host's libm.

Dtype policy: float16 and bfloat16 may be stored, copied and converted to (a
correctly rounded conversion), but any op that would round in them (``*``,
``sqrt``, every strict implementation) raises :class:`~ree._errors.NondeterminismError`
naming the op: torch computes them through float32 with a second rounding, and
devices differ in how. Mixed precision and autocast are therefore refused, not
emulated; train in float32 under strict mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ree.strict._matmul import strict_matmul
from ree.strict._mode import StrictMode, current_mode, supported_ops
from ree.strict._reduce import tree_sum
from ree.strict._rng import StrictGenerator, threefry2x32
from ree.strict._zoo import MODELS as REFERENCE_MODELS
from ree.strict._zoo import (
    Workload,
    build,
    reference_roots,
    reinit,
    train_root,
    train_workload,
)

__all__ = [
    "REFERENCE_MODELS",
    "StrictGenerator",
    "StrictMode",
    "Workload",
    "build",
    "current_mode",
    "enter_strict",
    "reference_roots",
    "reinit",
    "strict_matmul",
    "supported_ops",
    "threefry2x32",
    "train_root",
    "train_workload",
    "tree_sum",
]


@contextlib.contextmanager
def enter_strict(seed: int = 0, counter: int = 0) -> Iterator[StrictMode]:
    """Run a block under :class:`StrictMode` with a generator keyed by ``seed``.

    The block receives the mode; ``mode.generator.state()`` is the ``rng/ree``
    leaf for ``ree.capture_state(..., mode="strict", ree_rng=...)``.
    """
    mode = StrictMode(StrictGenerator(seed, counter))
    with mode:
        yield mode
