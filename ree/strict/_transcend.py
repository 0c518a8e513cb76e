"""Transcendental functions from correctly rounded primitives, in float64.

Every function here takes and returns float64 tensors and uses only IEEE-754
``+ - * /``, comparisons, ``round``/``floor``, selects and bit manipulation, each
as a separate tensor op (so no compiler can contract a multiply-add), with fixed
range reductions and fixed polynomial degrees. Each such op is correctly rounded
on every device, so these functions return the same bits everywhere. Callers
round the float64 result once to float32.

Accuracy (checked by the tests against Python's ``math`` in float64): a few
float64 ulp, so the float32 result is the correctly rounded value except when the
exact value lies within ~2**-45 relative of a float32 rounding boundary; the
float32 error is at most 0.5 ulp + 2**-45 relative (and "1 ulp" in the tests).
"""

from __future__ import annotations

import math

import torch

from ree._errors import NondeterminismError
from ree.strict._bits import F64_BIAS, F64_MANT_BITS

# fdlibm's split of ln 2: LN2_HI has trailing zero bits, so k * LN2_HI is exact
# for |k| < 2**20, and (x - k*LN2_HI) - k*LN2_LO is the reduced argument.
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
SQRT1_2 = 0.7071067811865476
TWO_OVER_SQRT_PI = 1.1283791670955126
INV_SQRT_2PI = 0.3989422804014327
SQRT_2_OVER_PI = 0.7978845608028654
_LOG_TERMS = 12
_ERF_TERMS = 60
_ERFC_CF_DEPTH = 60
_ERF_SERIES_MAX = 3.0


def _exp2_table(bits: int = 6) -> tuple[float, ...]:
    """``2**(j/64)`` for j in [0, 64), each the correctly rounded double, by integer arithmetic.

    No libm call: ``r = round(2**(j/64) * 2**52)`` is found by bisection on
    ``r**64`` against ``2**(j + 52*64)`` with Python integers, so the table is the
    same on every host.
    """
    n = 1 << bits
    out = []
    for j in range(n):
        target = 1 << (j + 52 * n)
        lo, hi = 1 << 52, 1 << 53
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if mid**n <= target:
                lo = mid
            else:
                hi = mid
        # round to nearest: r + 1/2 against the exact root (never a tie: it is irrational)
        r = lo + 1 if (2 * lo + 1) ** n <= target << n else lo
        out.append(r / float(1 << 52))
    return tuple(out)


_TABLE_BITS = 6
_EXP2_TABLE = _exp2_table(_TABLE_BITS)
_TABLE_N = 1 << _TABLE_BITS
# ln2/64 split like fdlibm's ln2: the high part has 32 significant bits, so k*HI is
# exact for |k| < 2**21
_LN2_N_HI = LN2_HI / _TABLE_N
_LN2_N_LO = LN2_LO / _TABLE_N
_INV_LN2_N = INV_LN2 * _TABLE_N
_POLY = [1.0 / math.factorial(n) for n in range(1, 7)]  # e**r - 1 to degree 6, |r| <= ln2/128
EXP_MIN = -708.0  # exp(-708) is a normal double; below, results are 0 once rounded to float32
EXP_MAX = 709.78


_TABLES: dict[torch.device, torch.Tensor] = {}


def _exp2_tensor(device: torch.device) -> torch.Tensor:
    table = _TABLES.get(device)
    if table is None:
        table = _TABLES[device] = torch.tensor(_EXP2_TABLE, dtype=torch.float64, device=device)
    return table


def _exp_parts(
    x: torch.Tensor, in_range: bool = False, k_zero: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``e**x = 2**m * T[j] * (1 + p)``: returns ``2**m``, ``T[j]``, ``p`` and ``k == 0``.

    ``x`` must be finite and within [EXP_MIN, EXP_MAX]. The reduced argument
    ``r = x - k*ln2/64`` (``k = 64m + j``) has |r| <= ln2/128, where the degree-6
    polynomial is accurate to 2**-60. The mask ``k == 0`` is None unless ``k_zero``
    asks for it. ``in_range`` says that ``x`` is at most
    _EXP_FAST_MAX, so that ``m`` is at most 1023 and needs no clamp (the lower
    bound EXP_MIN keeps the biased exponent of ``2**m`` above 0 either way). Every op after
    the first of each value is in place on a fresh tensor: the same roundings,
    fewer allocations.
    """
    kf = torch.mul(x, _INV_LN2_N).round_()
    r = torch.mul(kf, _LN2_N_HI)
    torch.sub(x, r, out=r)
    r.sub_(torch.mul(kf, _LN2_N_LO))
    # |k| <= 2**16 for x in range: int32 holds it, and converts, masks and indexes
    # faster than int64; only the exponent field is widened, to be shifted into place
    k = kf.to(torch.int32)
    is_zero = k == 0 if k_zero else None
    # index_select, not advanced indexing: the same values, several times faster on CPUs
    t = torch.index_select(_exp2_tensor(x.device), 0, (k & (_TABLE_N - 1)).reshape(-1))
    t = t.reshape(k.shape)
    m = k.bitwise_right_shift_(_TABLE_BITS)
    if not in_range:
        m.clamp_(-F64_BIAS + 1, F64_BIAS)
    biased = m.add_(F64_BIAS).to(torch.int64)
    scale = biased.bitwise_left_shift_(F64_MANT_BITS).view(torch.float64)
    # c6 * r + c5 first: the same product as Horner's from a tensor of c6
    p = torch.mul(r, _POLY[-1]).add_(_POLY[-2])
    for c in reversed(_POLY[:-2]):
        p.mul_(r).add_(c)
    return scale, t, p.mul_(r), is_zero


def _exp_from_parts(scale: torch.Tensor, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``(t + t*p) * scale``, in place on ``p`` (each op keeps its operand order)."""
    torch.mul(t, p, out=p)
    return torch.add(t, p, out=p).mul_(scale)


def _clean(x: torch.Tensor) -> torch.Tensor:
    # nan would become an undefined integer exponent; callers put it back
    return torch.where(torch.isnan(x), torch.zeros_like(x), x).clamp(EXP_MIN, EXP_MAX)


# below this, e**x has no overflow, and the special cases of exp() select nothing
_EXP_FAST_MAX = 700.0


def _range(x: torch.Tensor) -> tuple[bool, bool]:
    """Whether ``x`` is free of nan and below the overflow range, and whether all of it is >= EXP_MIN."""
    if x.numel() == 0:
        return True, True
    lo, hi = (float(v) for v in torch.aminmax(x))  # both nan when x holds a nan
    return hi <= _EXP_FAST_MAX and lo == lo, lo >= EXP_MIN


def exp(x: torch.Tensor) -> torch.Tensor:
    """``e**x`` in float64 (inf above 709.78, 0 below -708, nan for nan)."""
    fast, above_min = _range(x)
    if fast:
        # the common case (softmax's x - max <= 0): the same bits as below, without
        # the selections that would pick nothing
        if above_min:
            return _exp_from_parts(*_exp_parts(x, True)[:3])
        y = _exp_from_parts(*_exp_parts(x.clamp_min(EXP_MIN), True)[:3])
        return y.masked_fill_(x < EXP_MIN, 0.0)
    y = _exp_from_parts(*_exp_parts(_clean(x))[:3])
    y = torch.where(x > EXP_MAX, torch.full_like(x, math.inf), y)
    # flushed below 2**-1022: such values are 0 once rounded to float32 anyway
    y = torch.where(x < EXP_MIN, torch.zeros_like(x), y)
    return torch.where(torch.isnan(x), x, y)


def expm1(x: torch.Tensor) -> torch.Tensor:
    """``e**x - 1`` in float64, accurate near 0 (where it is the polynomial itself)."""
    fast, above_min = _range(x)
    scale, t, p, k_zero = _exp_parts(x if fast and above_min else _clean(x), fast, True)
    assert k_zero is not None
    # for k != 0, |x| > ln2/128 and e**x - 1 loses at most 8 bits of 53
    y = torch.mul(t, p)
    torch.add(t, y, out=y).mul_(scale).sub_(1.0)
    torch.where(k_zero, p, y, out=y)
    if fast and above_min:
        return y  # the selections below would pick nothing
    y = torch.where(x > EXP_MAX, torch.full_like(x, math.inf), y)
    return torch.where(torch.isnan(x), x, y)


def log(x: torch.Tensor) -> torch.Tensor:
    """Natural log in float64 of positive normal float64 values (any float32 widened).

    ``x = m * 2**e`` from the bits with m in [sqrt(1/2), sqrt(2)); then
    ``log m = 2 atanh(s)``, ``s = (m-1)/(m+1)``, by its odd series (12 terms).
    Special values: log(+-0) = -inf, log(x<0) = nan, log(inf) = inf, log(nan) = nan.
    """
    ok = (x > 0) & torch.isfinite(x)
    xs = torch.where(ok, x, torch.ones_like(x))
    bits = xs.view(torch.int64)
    e = ((bits >> F64_MANT_BITS) & 0x7FF) - F64_BIAS
    m = ((bits & ((1 << F64_MANT_BITS) - 1)) | (F64_BIAS << F64_MANT_BITS)).view(torch.float64)
    big = m > math.sqrt(2.0)
    m = torch.where(big, m * 0.5, m)
    e = torch.where(big, e + 1, e).to(torch.float64)
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    p = torch.full_like(z, 1.0 / (2 * _LOG_TERMS - 1))
    for n in range(_LOG_TERMS - 2, -1, -1):
        p = p * z + 1.0 / (2 * n + 1)
    logm = (s * 2.0) * p
    y = e * LN2_HI + (e * LN2_LO + logm)
    y = torch.where(x == 0, torch.full_like(x, -math.inf), y)
    y = torch.where(x == math.inf, x, y)
    return torch.where((x < 0) | torch.isnan(x), torch.full_like(x, math.nan), y)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + e**-x)`` in float64."""
    return 1.0 / (exp(-x) + 1.0)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh in float64 as ``-t / (2 + t)`` with ``t = expm1(-2|x|)``: no cancellation."""
    t = expm1(x.abs().mul_(-2.0))
    y = torch.add(t, 2.0)
    torch.div(t.neg_(), y, out=y)
    return torch.copysign(y, x, out=y)


def _erf_series(z: torch.Tensor) -> torch.Tensor:
    """erf(z) for 0 <= z <= 3 by the all-positive series (60 terms)."""
    z2 = z * z
    term = z
    acc = z
    for n in range(1, _ERF_TERMS):
        term = (term * (z2 * 2.0)) * (1.0 / (2 * n + 1))
        acc = acc + term
    return (acc * exp(-z2)) * TWO_OVER_SQRT_PI


def _erfc_cf(z: torch.Tensor) -> torch.Tensor:
    """erfc(z) for z >= 3 by its continued fraction, evaluated bottom-up to a fixed depth."""
    frac = z
    for n in range(_ERFC_CF_DEPTH, 0, -1):
        frac = z + (n * 0.5) / frac
    return exp(-(z * z)) / (frac * math.sqrt(math.pi))


def erfc_nonneg(z: torch.Tensor) -> torch.Tensor:
    """erfc(z) for z >= 0 with small relative error, in float64."""
    small = z < _ERF_SERIES_MAX
    zs = torch.where(small, z, torch.zeros_like(z))
    zl = torch.where(small, torch.full_like(z, _ERF_SERIES_MAX), z)
    return torch.where(small, 1.0 - _erf_series(zs), _erfc_cf(zl))


def erf(x: torch.Tensor) -> torch.Tensor:
    """erf in float64 (odd; 1 - erfc for large |x|)."""
    a = torch.where(torch.isnan(x), torch.zeros_like(x), x.abs())
    small = a < _ERF_SERIES_MAX
    y = torch.where(
        small,
        _erf_series(torch.where(small, a, torch.zeros_like(a))),
        1.0 - _erfc_cf(torch.where(small, torch.full_like(a, _ERF_SERIES_MAX), a)),
    )
    return torch.where(torch.isnan(x), x, torch.copysign(y, x))


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) = erfc(-x/sqrt 2)/2, accurate in relative terms for very negative x."""
    z = x * SQRT1_2
    c = erfc_nonneg(z.abs())
    y = torch.where(x < 0, c * 0.5, 1.0 - c * 0.5)
    return torch.where(torch.isnan(x), x, y)


# pi/2 in three 33-bit parts (fdlibm's pio2_1, pio2_2, pio2_3): k * part is exact
# for |k| < 2**20, so the reduction below is accurate for |x| < 1.6e6. Larger
# finite arguments are refused rather than answered inaccurately.
SIN_COS_MAX = 1e6
_PIO2_1 = 1.57079632673412561417e00
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_3 = 2.02226624871116645580e-21
_TWO_OVER_PI = 6.36619772367581382433e-01
_SIN_TERMS = [(-1) ** n / math.factorial(2 * n + 1) for n in range(9)]  # to r**17
_COS_TERMS = [(-1) ** n / math.factorial(2 * n) for n in range(10)]  # to r**18


def _sin_cos_reduced(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sin r``, ``cos r`` and the quadrant ``k mod 4``, for ``x = k*pi/2 + r``, |r| <= pi/4."""
    finite = torch.isfinite(x)
    if bool((finite & (x.abs() > SIN_COS_MAX)).any()):
        raise NondeterminismError(
            f"strict sin/cos take |x| <= {SIN_COS_MAX:g} (their argument reduction is exact "
            "only there); reduce the argument first, e.g. with a modulo of 2*pi"
        )
    xs = torch.where(finite, x, torch.zeros_like(x))
    kf = (xs * _TWO_OVER_PI).round()
    r = ((xs - kf * _PIO2_1) - kf * _PIO2_2) - kf * _PIO2_3
    z = r * r
    s = torch.full_like(z, _SIN_TERMS[-1])
    for c in reversed(_SIN_TERMS[:-1]):
        s = s * z + c
    c2 = torch.full_like(z, _COS_TERMS[-1])
    for c in reversed(_COS_TERMS[:-1]):
        c2 = c2 * z + c
    return s * r, c2, kf.to(torch.int64) & 3


def _nan_unless_finite(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), y, torch.full_like(x, math.nan))


def sin(x: torch.Tensor) -> torch.Tensor:
    """sin in float64 (nan for inf and nan)."""
    s, c, q = _sin_cos_reduced(x)
    y = torch.where(q == 0, s, torch.where(q == 1, c, torch.where(q == 2, -s, -c)))
    return _nan_unless_finite(x, y)


def cos(x: torch.Tensor) -> torch.Tensor:
    """cos in float64 (nan for inf and nan)."""
    s, c, q = _sin_cos_reduced(x)
    y = torch.where(q == 0, c, torch.where(q == 1, -s, torch.where(q == 2, -c, s)))
    return _nan_unless_finite(x, y)
