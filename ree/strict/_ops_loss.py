"""Strict implementations of losses (nll, mse) and of layer norm, forward and backward."""

from __future__ import annotations

from typing import Any

import torch

from ree.strict._reduce import const, tree_sum64
from ree.strict._registry import f64, handles, require_f32

aten = torch.ops.aten
F32 = torch.float32


def _safe(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets with ignored ones replaced by class 0, and the kept mask."""
    keep = target != ignore_index
    return torch.where(keep, target, torch.zeros_like(target)), keep


def _row_weights(
    weight: torch.Tensor | None, safe: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    zero = torch.zeros((), dtype=torch.float64, device=keep.device)
    if weight is None:
        return torch.where(keep, torch.ones((), dtype=torch.float64, device=keep.device), zero)
    return torch.where(keep, f64(weight)[safe], zero)


@handles(aten.nll_loss_forward.default)
def _nll_forward(
    ctx: Any,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    require_f32("nll_loss", x, weight)
    safe, keep = _safe(target, ignore_index)
    # gathering moves values; nothing is rounded before the sum
    picked = f64(x.gather(-1, safe.unsqueeze(-1)).squeeze(-1))
    w = _row_weights(weight, safe, keep)
    losses = -(picked * w)
    if reduction == 0:
        return losses.to(F32), torch.zeros((), dtype=F32, device=x.device)
    total = tree_sum64(losses, None)
    total_weight = tree_sum64(w, None)
    if reduction == 1:
        total = total / total_weight
    return total.to(F32), total_weight.to(F32)


@handles(aten.nll_loss_backward.default)
def _nll_backward(
    ctx: Any,
    grad: torch.Tensor,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    total_weight: torch.Tensor,
) -> torch.Tensor:
    require_f32("nll_loss_backward", grad, x)
    safe, keep = _safe(target, ignore_index)
    w = _row_weights(weight, safe, keep)
    g = f64(grad)
    if reduction == 1:
        g = g / f64(total_weight)
    rowg = -(w * g)
    out = torch.zeros(x.shape, dtype=F32, device=x.device)
    # one index per row: a scatter without collisions, so without any order to matter
    return out.scatter_(-1, safe.unsqueeze(-1), rowg.to(F32).unsqueeze(-1))


@handles(aten.mse_loss.default)
def _mse(ctx: Any, x: torch.Tensor, target: torch.Tensor, reduction: int = 1) -> torch.Tensor:
    require_f32("mse_loss", x, target)
    d = f64(x) - f64(target)
    sq = d * d
    if reduction == 0:
        return sq.to(F32)
    total = tree_sum64(sq, None)
    if reduction == 1:
        total = total / const(x, sq.numel())
    return total.to(F32)


@handles(aten.mse_loss_backward.default)
def _mse_backward(
    ctx: Any, grad: torch.Tensor, x: torch.Tensor, target: torch.Tensor, reduction: int
) -> torch.Tensor:
    require_f32("mse_loss_backward", grad, x, target)
    d = f64(x) - f64(target)
    g = (d * 2.0) * f64(grad)
    if reduction == 1:
        g = g / const(x, x.numel())
    return g.to(F32)


def _norm_dims(x: torch.Tensor, normalized_shape: list[int]) -> list[int]:
    return list(range(x.dim() - len(normalized_shape), x.dim()))


@handles(aten.native_layer_norm.default)
def _layer_norm(
    ctx: Any,
    x: torch.Tensor,
    normalized_shape: list[int],
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    require_f32("layer_norm", x, weight, bias)
    dims = _norm_dims(x, normalized_shape)
    n = 1
    for d in dims:
        n *= x.shape[d]
    x64 = f64(x)
    mean = tree_sum64(x64, dims, keepdim=True) / const(x, n)
    c = x64 - mean
    var = tree_sum64(c * c, dims, keepdim=True) / const(x, n)
    rstd = 1.0 / (var + eps).sqrt()
    y = c * rstd
    if weight is not None:
        y = y * f64(weight)
    if bias is not None:
        y = y + f64(bias)
    return y.to(F32), mean.to(F32), rstd.to(F32)


@handles(aten.native_layer_norm_backward.default)
def _layer_norm_backward(
    ctx: Any,
    grad: torch.Tensor,
    x: torch.Tensor,
    normalized_shape: list[int],
    mean: torch.Tensor,
    rstd: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    require_f32("layer_norm_backward", grad, x, weight)
    dims = _norm_dims(x, normalized_shape)
    batch = list(range(x.dim() - len(normalized_shape)))
    n = 1
    for d in dims:
        n *= x.shape[d]
    g = f64(grad)
    r = f64(rstd)
    xhat = (f64(x) - f64(mean)) * r
    gi = gw = gb = None
    if output_mask[0]:
        gx = g * f64(weight) if weight is not None else g
        m1 = tree_sum64(gx, dims, keepdim=True) / const(x, n)
        m2 = tree_sum64(gx * xhat, dims, keepdim=True) / const(x, n)
        gi = (r * ((gx - m1) - xhat * m2)).to(F32)
    if output_mask[1] and weight is not None:
        gw = tree_sum64(g * xhat, batch).to(F32) if batch else (g * xhat).to(F32)
    if output_mask[2] and bias is not None:
        gb = tree_sum64(g, batch).to(F32) if batch else g.to(F32)
    return gi, gw, gb
