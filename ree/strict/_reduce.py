"""Reductions in a fixed order: a pairwise tree of separate float64 additions.

The reduced elements are laid along one leading axis; each level adds the first
half to the second half elementwise (an odd last element is carried up), so the
tree's shape depends only on the element count. Each elementwise addition is one
correctly rounded IEEE operation on every device, so the result is the same bits
everywhere. Float32 inputs are summed in float64 and rounded once, which keeps the
error near 0.5 float32 ulp for sums without heavy cancellation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ree._errors import NondeterminismError


def const(like: torch.Tensor, value: float) -> torch.Tensor:
    """A float64 0-dim tensor on ``like``'s device.

    Dividing by a tensor, never by a Python number, matters: CUDA turns ``t / 3.0``
    into ``t * (1/3.0)``, which is not the correctly rounded quotient.
    """
    return torch.tensor(float(value), dtype=torch.float64, device=like.device)


def _norm_dims(x: torch.Tensor, dims: int | Sequence[int] | None) -> list[int]:
    if dims is None:
        return list(range(x.dim()))
    if isinstance(dims, int):
        dims = [dims]
    if len(dims) == 0:  # aten's sum(dim=[]) reduces everything
        return list(range(x.dim()))
    return sorted({d % max(x.dim(), 1) for d in dims})


def tree_sum64(
    x: torch.Tensor, dims: int | Sequence[int] | None, keepdim: bool = False
) -> torch.Tensor:
    """Sum ``x`` (converted to float64) over ``dims`` by a fixed pairwise tree; float64 result."""
    x = x.to(torch.float64)
    if x.dim() == 0:
        return x.clone()
    rd = _norm_dims(x, dims)
    kept = [d for d in range(x.dim()) if d not in rd]
    out_shape = [x.shape[d] for d in kept]
    n = 1
    for d in rd:
        n *= x.shape[d]
    if rd == [x.dim() - 1] and n > 0:
        return _tree_last(x, keepdim)
    y = x.permute(*rd, *kept).reshape(n, *out_shape)
    if n == 0:
        y = torch.zeros((1, *out_shape), dtype=torch.float64, device=x.device)
    owned = False  # y may be x itself until the first level writes a fresh tensor
    while y.shape[0] > 1:
        m = y.shape[0]
        h = m // 2
        if owned and h > 1:
            y[:h].add_(y[h : 2 * h])
            if m % 2:
                y[h].copy_(y[2 * h])
            y = y[: h + m % 2]
            continue
        top = y[:h] + y[h : 2 * h]
        y = torch.cat([top, y[2 * h :]]) if m % 2 else top
        owned = True
    y = y[0]
    if keepdim:
        for d in rd:
            y = y.unsqueeze(d)
    return y


def _tree_last(x: torch.Tensor, keepdim: bool) -> torch.Tensor:
    """The same fixed tree along the last dimension, on strided halves (no transposing copy).

    The first level writes a fresh tensor; the levels after it add in place into
    that tensor's first half, except the last (h == 1), which writes a fresh
    result. The same additions, in the same order.
    """
    y = x
    owned = False
    while y.shape[-1] > 1:
        m = y.shape[-1]
        h = m // 2
        if owned and h > 1:
            y[..., :h].add_(y[..., h : 2 * h])
            if m % 2:
                y[..., h].copy_(y[..., 2 * h])
            y = y[..., : h + m % 2]
            continue
        top = y[..., :h] + y[..., h : 2 * h]
        y = torch.cat([top, y[..., 2 * h :]], dim=-1) if m % 2 else top
        owned = True
    return y if keepdim else y.squeeze(-1)


def _check_float(x: torch.Tensor, what: str) -> None:
    if x.dtype not in (torch.float32, torch.float64):
        raise NondeterminismError(
            f"strict mode implements {what} for float32 and float64 only, got {x.dtype}; "
            "keep the model and its inputs in float32 under strict mode, or cast to float32 "
            "first"
        )


def tree_sum(
    x: torch.Tensor,
    dims: int | Sequence[int] | None = None,
    keepdim: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``x.sum(dims)`` in a fixed order. Integer and bool sums are exact and run natively."""
    if not x.is_floating_point():
        return torch.sum(x, dim=_norm_dims(x, dims), keepdim=keepdim, dtype=dtype)
    _check_float(x, "sum")
    return tree_sum64(x, dims, keepdim).to(dtype or x.dtype)


def count(x: torch.Tensor, dims: int | Sequence[int] | None) -> int:
    """The number of elements a reduction over ``dims`` combines."""
    n = 1
    for d in _norm_dims(x, dims):
        n *= x.shape[d] if x.dim() else 1
    return n


def tree_mean(
    x: torch.Tensor,
    dims: int | Sequence[int] | None = None,
    keepdim: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``x.mean(dims)``: the fixed-order float64 sum divided by the count, rounded once."""
    _check_float(x, "mean")
    return (tree_sum64(x, dims, keepdim) / const(x, count(x, dims))).to(dtype or x.dtype)


def tree_var64(
    x: torch.Tensor, dims: int | Sequence[int] | None, correction: float, keepdim: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variance and mean in float64, two-pass (mean first), both in a fixed order."""
    _check_float(x, "var")
    n = count(x, dims)
    mean = tree_sum64(x, dims, keepdim=True) / const(x, n)
    d = x.to(torch.float64) - mean
    var = tree_sum64(d * d, dims, keepdim) / const(x, max(n - correction, 0))
    return var, (mean if keepdim else mean.reshape(var.shape))
