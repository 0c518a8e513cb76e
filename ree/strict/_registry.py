"""The table of strict implementations, filled by the ``_ops_*`` modules at import.

A handler receives the active :class:`~ree.strict._mode.StrictMode` first (for its
generator), then the op's own arguments. It runs with the mode off, so every torch
op it calls runs natively: a handler may only call ops that are exact on their
own, or other strict implementations directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ree._errors import NondeterminismError

Handler = Callable[..., Any]
HANDLERS: dict[Any, Handler] = {}
FLOAT32 = torch.float32


def handles(*ops: Any) -> Callable[[Handler], Handler]:
    """Register the decorated function as the strict implementation of ``ops``."""

    def deco(fn: Handler) -> Handler:
        for op in ops:
            if op in HANDLERS:
                raise RuntimeError(f"two strict implementations of {op}")  # a bug in this package
            HANDLERS[op] = fn
        return fn

    return deco


def require_f32(op: str, *tensors: torch.Tensor | None) -> None:
    """Raise :class:`NondeterminismError` unless every given tensor is float32."""
    for t in tensors:
        if t is not None and t.dtype != FLOAT32:
            raise NondeterminismError(
                f"strict mode implements {op} for float32 only, got {t.dtype}; keep the "
                "model, its inputs and its optimizer state in float32 under strict mode "
                "(no .half(), .bfloat16() or autocast), or train in mode='device'"
            )


def f64(t: torch.Tensor) -> torch.Tensor:
    """Widen to float64, exactly."""
    return t.to(torch.float64)
