"""Strict implementations of arithmetic, reductions, activations and softmax.

Composite formulas are computed in float64 with separate tensor ops and rounded
once to float32: float64 ``+ - * /`` are correctly rounded on every device, and
no kernel can contract them into an FMA because each is its own kernel. Sums go
through :mod:`ree.strict._reduce` and transcendentals through
:mod:`ree.strict._transcend`. Losses and norms are in :mod:`ree.strict._ops_loss`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ree._errors import NondeterminismError
from ree.strict import _transcend as tr
from ree.strict._chunk import map_elementwise, map_rows, reduce_rows
from ree.strict._reduce import tree_mean, tree_sum, tree_sum64, tree_var64
from ree.strict._registry import f64, handles, require_f32

aten = torch.ops.aten
F32 = torch.float32


def inplace(self: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Write ``value`` into ``self`` and return ``self``, as aten's in-place ops do.

    A result of a kind ``self`` cannot hold (a float into an integer tensor) is
    refused with torch's own error, not truncated by the copy.
    """
    if isinstance(value, torch.Tensor) and _kind(value.dtype) > _kind(self.dtype):
        raise RuntimeError(
            f"result type {_dtype_name(value.dtype)} can't be cast to the desired output type "
            f"{_dtype_name(self.dtype)}"
        )
    self.copy_(value)
    return self


def _kind(dtype: torch.dtype) -> int:
    """bool < integer < floating < complex: torch casts a result only down to its own kind
    (``torch.can_cast``'s rule, without its aten call, which would reach this mode)."""
    if dtype == torch.bool:
        return 0
    if dtype.is_complex:
        return 3
    return 2 if dtype.is_floating_point else 1


def _dtype_name(dtype: torch.dtype) -> str:
    """torch's name for a scalar type in its casting errors (``Float``, ``Long``...)."""
    return _SCALAR_NAMES.get(dtype, str(dtype))


_SCALAR_NAMES = {
    torch.bool: "Bool", torch.uint8: "Byte", torch.int8: "Char", torch.int16: "Short",
    torch.int32: "Int", torch.int64: "Long", torch.float16: "Half", torch.bfloat16: "BFloat16",
    torch.float32: "Float", torch.float64: "Double", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}  # fmt: skip


def on_device(x: Any, like: torch.Tensor) -> Any:
    """A Python number, or a 0-dim tensor elsewhere, as a 0-dim tensor on ``like``'s device.

    CUDA divides by a CPU scalar as ``t * (1/s)``, which is not the correctly
    rounded quotient; by a device tensor it divides.
    """
    if isinstance(x, torch.Tensor):
        return x.to(like.device) if x.dim() == 0 and x.device != like.device else x
    return torch.tensor(x, device=like.device)


# -- + - / with their extra operands -------------------------------------------------


def _scale(b: Any, alpha: float) -> Any:
    # a Python number is scaled on the host, in double, like any scalar argument
    return torch.mul(b, alpha) if isinstance(b, torch.Tensor) else b * alpha


def add(a: Any, b: Any, alpha: float = 1) -> torch.Tensor:
    """``a + alpha*b`` as two roundings: torch may use one FMA on some ISAs."""
    if alpha != 1:
        b = _scale(b, alpha)
    return torch.add(a, b)


def sub(a: Any, b: Any, alpha: float = 1) -> torch.Tensor:
    """``a - alpha*b`` as two roundings."""
    if alpha != 1:
        b = _scale(b, alpha)
    return torch.sub(a, b)


def div(a: Any, b: Any) -> torch.Tensor:
    """``a / b``, correctly rounded on every device."""
    like = a if isinstance(a, torch.Tensor) else b
    return torch.div(a, on_device(b, like))


@handles(aten.add.Tensor, aten.add.Scalar)
def _add(ctx: Any, a: Any, b: Any, *, alpha: float = 1) -> torch.Tensor:
    return add(a, b, alpha)


@handles(aten.add_.Tensor, aten.add_.Scalar)
def _add_(ctx: Any, a: torch.Tensor, b: Any, *, alpha: float = 1) -> torch.Tensor:
    return inplace(a, add(a, b, alpha))


@handles(aten.sub.Tensor, aten.sub.Scalar)
def _sub(ctx: Any, a: Any, b: Any, *, alpha: float = 1) -> torch.Tensor:
    return sub(a, b, alpha)


@handles(aten.sub_.Tensor, aten.sub_.Scalar)
def _sub_(ctx: Any, a: torch.Tensor, b: Any, *, alpha: float = 1) -> torch.Tensor:
    return inplace(a, sub(a, b, alpha))


@handles(aten.rsub.Tensor, aten.rsub.Scalar)
def _rsub(ctx: Any, a: torch.Tensor, b: Any, *, alpha: float = 1) -> torch.Tensor:
    return sub(b, a, alpha) if isinstance(b, torch.Tensor) else sub(on_device(b, a), a, alpha)


@handles(aten.div.Tensor, aten.div.Scalar)
def _div(ctx: Any, a: Any, b: Any) -> torch.Tensor:
    return div(a, b)


@handles(aten.div_.Tensor, aten.div_.Scalar)
def _div_(ctx: Any, a: torch.Tensor, b: Any) -> torch.Tensor:
    return inplace(a, div(a, b))


@handles(aten.div.Tensor_mode, aten.div_.Tensor_mode)
def _div_mode(
    ctx: Any, a: torch.Tensor, b: Any, *, rounding_mode: str | None = None
) -> torch.Tensor:
    floats = a.is_floating_point() or (isinstance(b, torch.Tensor) and b.is_floating_point())
    if rounding_mode is not None and (floats or isinstance(b, float)):
        raise NondeterminismError(
            f"strict mode has no reproducible float division with rounding_mode={rounding_mode!r}"
        )
    return torch.div(a, on_device(b, a), rounding_mode=rounding_mode)


@handles(aten.reciprocal.default)
def _reciprocal(ctx: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.div(torch.ones_like(x), x)


@handles(aten.rsqrt.default)
def _rsqrt(ctx: Any, x: torch.Tensor) -> torch.Tensor:
    require_f32("rsqrt", x)
    return (1.0 / f64(x).sqrt()).to(F32)


# -- reductions ----------------------------------------------------------------------


@handles(aten.sum.default)
def _sum_all(ctx: Any, x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    return tree_sum(x, None, False, dtype)


@handles(aten.sum.dim_IntList)
def _sum(
    ctx: Any,
    x: torch.Tensor,
    dim: Any = None,
    keepdim: bool = False,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    return tree_sum(x, dim, keepdim, dtype)


@handles(aten.mean.default)
def _mean_all(ctx: Any, x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    return tree_mean(x, None, False, dtype)


@handles(aten.mean.dim)
def _mean(
    ctx: Any,
    x: torch.Tensor,
    dim: Any = None,
    keepdim: bool = False,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    return tree_mean(x, dim, keepdim, dtype)


@handles(aten.var.correction)
def _var(
    ctx: Any,
    x: torch.Tensor,
    dim: Any = None,
    *,
    correction: float | None = None,
    keepdim: bool = False,
) -> torch.Tensor:
    var, _ = tree_var64(x, dim, 1 if correction is None else correction, keepdim)
    return var.to(x.dtype)


@handles(aten.var_mean.correction)
def _var_mean(
    ctx: Any,
    x: torch.Tensor,
    dim: Any = None,
    *,
    correction: float | None = None,
    keepdim: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    var, mean = tree_var64(x, dim, 1 if correction is None else correction, keepdim)
    return var.to(x.dtype), mean.to(x.dtype)


@handles(aten.std.correction)
def _std(
    ctx: Any,
    x: torch.Tensor,
    dim: Any = None,
    *,
    correction: float | None = None,
    keepdim: bool = False,
) -> torch.Tensor:
    var, _ = tree_var64(x, dim, 1 if correction is None else correction, keepdim)
    return var.sqrt().to(x.dtype)


def vector_norm(x: torch.Tensor, ord: float, dim: Any, keepdim: bool) -> torch.Tensor:
    """The 2-, 1- or inf-norm with a fixed-order sum in float64, rounded once."""
    if ord == 2:
        return tree_sum64(f64(x) * f64(x), dim, keepdim).sqrt().to(x.dtype)
    if ord == 1:
        return tree_sum64(f64(x).abs(), dim, keepdim).to(x.dtype)
    if ord == math.inf:
        return x.abs().amax(dim=() if dim is None else dim, keepdim=keepdim)
    raise NondeterminismError(f"strict mode has no reproducible vector norm of order {ord!r}")


@handles(aten.linalg_vector_norm.default)
def _vector_norm(
    ctx: Any,
    x: torch.Tensor,
    ord: float = 2,
    dim: Any = None,
    keepdim: bool = False,
    *,
    dtype: Any = None,
) -> torch.Tensor:
    return vector_norm(x if dtype is None else x.to(dtype), float(ord), dim, keepdim)


# -- elementwise transcendentals --------------------------------------------------------


def _unary(name: str, fn: Any) -> Any:
    def run(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        require_f32(name, x)
        return map_elementwise(lambda t: fn(f64(t)), x)

    def run_(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        require_f32(name, x)
        return inplace(x, map_elementwise(lambda t: fn(f64(t)), x))

    return run, run_


for _name, _fn in (
    ("exp", tr.exp),
    ("expm1", tr.expm1),
    ("log", tr.log),
    ("tanh", tr.tanh),
    ("sigmoid", tr.sigmoid),
    ("erf", tr.erf),
    ("sin", tr.sin),
    ("cos", tr.cos),
):
    _run, _run_ = _unary(_name, _fn)
    handles(getattr(aten, _name).default)(_run)
    handles(getattr(aten, _name + "_").default)(_run_)


@handles(aten.log1p.default)
def _log1p(ctx: Any, x: torch.Tensor) -> torch.Tensor:
    # 1 + x is exact in float64 for float32 x with |x| >= 2**-29; below, log1p(x) = x to float32
    require_f32("log1p", x)
    y = tr.log(f64(x) + 1.0)
    small = x.abs() < 2.0**-29
    return torch.where(small, x, y.to(F32))


@handles(aten.tanh_backward.default)
def _tanh_backward(ctx: Any, grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    require_f32("tanh_backward", grad, y)

    def fn(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t64 = f64(t)
        return f64(g) * (1.0 - t64 * t64)

    return map_elementwise(fn, grad, y)


@handles(aten.sigmoid_backward.default)
def _sigmoid_backward(ctx: Any, grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    require_f32("sigmoid_backward", grad, y)
    y64 = f64(y)
    return ((f64(grad) * y64) * (1.0 - y64)).to(F32)


def _gelu_tanh_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``u``, ``(1 + tanh u)/2 = sigmoid(2u)`` and ``sigmoid(-2u)`` for the tanh form."""
    u = (x + (x * x * x) * 0.044715) * tr.SQRT_2_OVER_PI
    return u, tr.sigmoid(u * 2.0), tr.sigmoid(u * -2.0)


@handles(aten.gelu.default)
def _gelu(ctx: Any, x: torch.Tensor, *, approximate: str = "none") -> torch.Tensor:
    require_f32("gelu", x)

    def fn(t: torch.Tensor) -> torch.Tensor:
        x64 = f64(t)
        if approximate == "tanh":
            # 1 + tanh(u) = 2 sigmoid(2u) avoids the cancellation at very negative u
            return x64 * _gelu_tanh_parts(x64)[1]
        return x64 * tr.normal_cdf(x64)

    return map_elementwise(fn, x)


@handles(aten.gelu_backward.default)
def _gelu_backward(
    ctx: Any, grad: torch.Tensor, x: torch.Tensor, *, approximate: str = "none"
) -> torch.Tensor:
    require_f32("gelu_backward", grad, x)

    def fn(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x64 = f64(t)
        if approximate == "tanh":
            _, s_pos, s_neg = _gelu_tanh_parts(x64)
            du = (1.0 + (x64 * x64) * (3.0 * 0.044715)) * tr.SQRT_2_OVER_PI
            # d/dx x*s(2u) = s(2u) + x * 2 s(2u) s(-2u) du
            d = s_pos + ((x64 * 2.0) * (s_pos * s_neg)) * du
        else:
            pdf = tr.exp((x64 * x64) * -0.5) * tr.INV_SQRT_2PI
            d = tr.normal_cdf(x64) + x64 * pdf
        return f64(g) * d

    return map_elementwise(fn, grad, x)


@handles(aten.silu.default)
def _silu(ctx: Any, x: torch.Tensor) -> torch.Tensor:
    require_f32("silu", x)
    x64 = f64(x)
    return (x64 * tr.sigmoid(x64)).to(F32)


@handles(aten.silu_backward.default)
def _silu_backward(ctx: Any, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    require_f32("silu_backward", grad, x)
    x64 = f64(x)
    s = tr.sigmoid(x64)
    return (f64(grad) * (s * (1.0 + x64 * (1.0 - s)))).to(F32)


# -- pow ------------------------------------------------------------------------------------


def _int_power(x64: torch.Tensor, n: int) -> torch.Tensor:
    """``x**n`` for integer n by square-and-multiply in float64, in a fixed order."""
    result: torch.Tensor | None = None
    base = x64
    m = abs(n)
    while m:
        if m & 1:
            result = base if result is None else result * base
        m >>= 1
        if m:
            base = base * base
    assert result is not None
    return 1.0 / result if n < 0 else result


def pow_scalar(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x ** p`` for a float32 tensor and a Python exponent."""
    require_f32("pow", x)
    if p == 0:
        return torch.ones_like(x)
    if p == 1:
        return x.clone()
    if p == 2:
        return x * x  # one correctly rounded product
    if p == 0.5:
        return torch.sqrt(x)
    if float(p).is_integer() and abs(p) <= 64:
        y = map_elementwise(lambda t: _int_power(f64(t), int(p)), x)
    else:
        y = map_elementwise(
            lambda t: _pow_general(f64(t), torch.full_like(t, float(p), dtype=torch.float64)), x
        )
    # in the input's memory layout, as torch gives it (a caller may view the result)
    return y if x.is_contiguous() else torch.empty_like(x).copy_(y)


def _pow_general(x64: torch.Tensor, p64: torch.Tensor) -> torch.Tensor:
    """``x ** p`` as ``exp(p log x)`` for x > 0, with the IEEE special cases for x <= 0."""
    pos = tr.exp(p64 * tr.log(x64.abs()))
    odd = (p64.remainder(2.0) == 1.0) & (p64.floor() == p64)
    integral = p64.floor() == p64
    # a negative finite base has a real power only for integral exponents; -inf has one always
    y = torch.where(odd & (x64 < 0), -pos, pos)
    y = torch.where((x64 < 0) & torch.isfinite(x64) & ~integral, math.nan, y)
    return torch.where(p64 == 0, torch.ones_like(y), y)


@handles(aten.pow.Tensor_Scalar)
def _pow_ts(ctx: Any, x: torch.Tensor, p: Any) -> torch.Tensor:
    if not x.is_floating_point() and isinstance(p, int) and p >= 0:
        return torch.pow(x, p)  # integer powers are exact
    return pow_scalar(x, float(p))


@handles(aten.pow_.Scalar)
def _pow_ts_(ctx: Any, x: torch.Tensor, p: Any) -> torch.Tensor:
    return inplace(x, pow_scalar(x, float(p)))


@handles(aten.pow.Tensor_Tensor)
def _pow_tt(ctx: Any, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    require_f32("pow", x, p)
    return _pow_general(f64(x), f64(p)).to(F32)


@handles(aten.pow.Scalar)
def _pow_st(ctx: Any, base: Any, p: torch.Tensor) -> torch.Tensor:
    require_f32("pow", p)
    p64 = f64(p)
    return _pow_general(torch.full_like(p64, float(base)), p64).to(F32)


# -- softmax ------------------------------------------------------------------------------


def _shifted_exp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``e = exp(x - max)`` of float32 rows, and the max, both float64."""
    x64 = f64(x)
    m = x64.amax(-1, keepdim=True)
    # a row of -inf has max -inf; shift by 0 there so it gives nan like torch, not a crash
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    return tr.exp(x64.sub_(m)), m


def _softmax_rows(x: torch.Tensor) -> torch.Tensor:
    e, _ = _shifted_exp(x)
    return e.div_(tree_sum64(e, -1, keepdim=True))


def _max_sum_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row's max and the fixed-order sum of ``exp(x - max)``, as a (rows, 2) float64 tensor."""
    e, m = _shifted_exp(x)
    return torch.cat([m, tree_sum64(e, -1, keepdim=True)], dim=1)


def _log_softmax_rows(x: torch.Tensor, m: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    return f64(x).sub_(m).sub_(log_s)


@handles(aten._softmax.default)
def _softmax(ctx: Any, x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    require_f32("softmax", x)
    return map_rows(_softmax_rows, dim, x)


@handles(aten._safe_softmax.default)
def _safe_softmax(ctx: Any, x: torch.Tensor, dim: int, dtype: Any = None) -> torch.Tensor:
    require_f32("softmax", x)
    # rows that are all -inf give 0, not nan (the masked-attention convention)
    dead = (x == -math.inf).all(dim, keepdim=True)
    y = map_rows(_softmax_rows, dim, x)
    return torch.where(dead, torch.zeros((), dtype=F32, device=x.device), y)


@handles(aten._log_softmax.default)
def _log_softmax(ctx: Any, x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    require_f32("log_softmax", x)
    # the log of each row's sum runs once over all rows, not once per chunk of rows
    stats = reduce_rows(_max_sum_rows, dim, x)
    log_s = map_elementwise(tr.log, stats[:, 1:], dtype=torch.float64)
    return map_rows(_log_softmax_rows, dim, x, per_row=(stats[:, :1], log_s))


def _softmax_backward_rows(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    g64, y64 = f64(g), f64(y)
    d = g64.sub_(tree_sum64(g64 * y64, -1, keepdim=True))
    return torch.mul(y64, d, out=d)


def _log_softmax_backward_rows(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    g64 = f64(g)
    e = tr.exp(f64(y)).mul_(tree_sum64(g64, -1, keepdim=True))
    return torch.sub(g64, e, out=e)


@handles(aten._softmax_backward_data.default)
def _softmax_backward(
    ctx: Any, grad: torch.Tensor, y: torch.Tensor, dim: int, input_dtype: Any
) -> torch.Tensor:
    require_f32("softmax_backward", grad, y)
    return map_rows(_softmax_backward_rows, dim, grad, y)


@handles(aten._log_softmax_backward_data.default)
def _log_softmax_backward(
    ctx: Any, grad: torch.Tensor, y: torch.Tensor, dim: int, input_dtype: Any
) -> torch.Tensor:
    require_f32("log_softmax_backward", grad, y)
    return map_rows(_log_softmax_backward_rows, dim, grad, y)


@handles(aten.logsumexp.default)
def _logsumexp(ctx: Any, x: torch.Tensor, dim: Any, keepdim: bool = False) -> torch.Tensor:
    require_f32("logsumexp", x)
    dims = [dim] if isinstance(dim, int) else list(dim)
    x64 = f64(x)
    m = x64.amax(dims, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    s = tree_sum64(tr.exp(x64 - m), dims, keepdim=True)
    out = m + tr.log(s)
    return (out if keepdim else out.squeeze(dims)).to(F32)
