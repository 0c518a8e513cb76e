"""Exact building blocks: powers of two and exponents read from float bits.

Strict mode never scales with ``ldexp``, ``pow`` or ``log2``: their results are
library-defined. A power of two assembled from its IEEE-754 bit pattern, and an
exponent read from a float's bit pattern, are the same on every device.
"""

from __future__ import annotations

import torch

F32_MANT_BITS = 23
F64_MANT_BITS = 52
F32_BIAS = 127
F64_BIAS = 1023


def pow2_f64(k: torch.Tensor) -> torch.Tensor:
    """``2.0**k`` in float64 for an integer tensor ``k``, built from bits.

    ``k`` is clamped to the normal range [-1022, 1023]; callers keep it there.
    """
    k64 = k.to(torch.int64).clamp(-F64_BIAS + 1, F64_BIAS)
    return ((k64 + F64_BIAS) << F64_MANT_BITS).view(torch.float64)


def exponent_f32(x: torch.Tensor) -> torch.Tensor:
    """The unbiased binary exponent ``e`` of each float32, as int32, with |x| < 2**(e+1).

    Zeros and subnormals get -126 (the smallest normal exponent), which keeps the
    bound true for them; inf and nan get 128.
    """
    field = (x.contiguous().view(torch.int32) >> F32_MANT_BITS) & 0xFF
    return field.clamp_min(1) - F32_BIAS
