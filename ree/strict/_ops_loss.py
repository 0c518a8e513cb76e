"""Strict implementations of losses (nll, mse), layer norm and batch norm, forward and backward."""

from __future__ import annotations

from typing import Any

import torch

from ree._errors import NondeterminismError
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
    # in place from here on: x64 and its descendants are fresh, and each op keeps its operand order
    c = x64.sub_(mean)
    var = tree_sum64(c * c, dims, keepdim=True) / const(x, n)
    rstd = 1.0 / (var + eps).sqrt()
    y = c.mul_(rstd)
    if weight is not None:
        y.mul_(f64(weight))
    if bias is not None:
        y.add_(f64(bias))
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
    xhat = f64(x).sub_(f64(mean)).mul_(r)
    gi = gw = gb = None
    if output_mask[0]:
        gx = g * f64(weight) if weight is not None else g
        m1 = tree_sum64(gx, dims, keepdim=True) / const(x, n)
        m2 = tree_sum64(gx * xhat, dims, keepdim=True) / const(x, n)
        d = torch.sub(gx, m1).sub_(xhat * m2)
        gi = torch.mul(r, d, out=d).to(F32)
    if output_mask[1] and weight is not None:
        gw = tree_sum64(g * xhat, batch).to(F32) if batch else (g * xhat).to(F32)
    if output_mask[2] and bias is not None:
        gb = tree_sum64(g, batch).to(F32) if batch else g.to(F32)
    return gi, gw, gb


# -- batch norm: statistics over every dimension but the channels (dim 1) ---------------------


def _bn_dims(x: torch.Tensor) -> tuple[list[int], list[int], int]:
    """Reduced dims, the shape that broadcasts a per-channel vector, and the count per channel."""
    dims = [0, *range(2, x.dim())]
    n = 1
    for d in dims:
        n *= x.shape[d]
    return dims, [1, x.shape[1]] + [1] * (x.dim() - 2), n


def batch_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch norm in float64 with fixed-order sums, rounded once; running stats updated in place.

    Training normalises with the batch's mean and biased variance (two passes), and
    moves the running stats by ``momentum`` towards the mean and the unbiased
    variance, each new value rounded once. Evaluation normalises with the running
    stats and returns empty saved statistics, as torch does.
    """
    require_f32("batch_norm", x, weight, bias, running_mean, running_var)
    dims, bshape, n = _bn_dims(x)
    x64 = f64(x)
    if training:
        mean = tree_sum64(x64, dims, keepdim=True) / const(x, n)
        c = x64 - mean
        sq = tree_sum64(c * c, dims, keepdim=True)
        rstd = 1.0 / (sq / const(x, n) + eps).sqrt()
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                unbiased = sq / const(x, max(n - 1, 1))
                for run, new in ((running_mean, mean), (running_var, unbiased)):
                    moved = f64(run) * (1.0 - momentum) + new.reshape(-1) * momentum
                    run.copy_(moved.to(F32))
        saved = (mean.reshape(-1).to(F32), rstd.reshape(-1).to(F32))
    else:
        if running_mean is None or running_var is None:
            raise NondeterminismError("batch norm in evaluation needs running statistics")
        mean = f64(running_mean).reshape(bshape)
        c = x64 - mean
        rstd = 1.0 / (f64(running_var).reshape(bshape) + eps).sqrt()
        empty = torch.empty(0, dtype=F32, device=x.device)
        saved = (empty, empty.clone())
    y = c * rstd
    if weight is not None:
        y = y * f64(weight).reshape(bshape)
    if bias is not None:
        y = y + f64(bias).reshape(bshape)
    return y.to(F32), *saved


@handles(aten.native_batch_norm.default, aten._native_batch_norm_legit.default)
def _batch_norm(
    ctx: Any,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps)


@handles(aten._native_batch_norm_legit.no_stats)
def _batch_norm_no_stats(
    ctx: Any,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch_norm(x, weight, bias, None, None, training, momentum, eps)


@handles(aten._native_batch_norm_legit_no_training.default)
def _batch_norm_no_training(
    ctx: Any,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch_norm(x, weight, bias, running_mean, running_var, False, momentum, eps)


@handles(aten.native_batch_norm_backward.default)
def _batch_norm_backward(
    ctx: Any,
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    save_mean: torch.Tensor | None,
    save_invstd: torch.Tensor | None,
    train: bool,
    eps: float,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The batch-norm gradients from the saved (training) or running (evaluation) statistics."""
    require_f32("batch_norm_backward", grad, x, weight)
    dims, bshape, n = _bn_dims(x)
    g = f64(grad)
    if train:
        if save_mean is None or save_invstd is None:
            raise NondeterminismError("batch norm backward in training needs the saved statistics")
        mean = f64(save_mean).reshape(bshape)
        r = f64(save_invstd).reshape(bshape)
    else:
        if running_mean is None or running_var is None:
            raise NondeterminismError("batch norm backward in evaluation needs running statistics")
        mean = f64(running_mean).reshape(bshape)
        r = 1.0 / (f64(running_var).reshape(bshape) + eps).sqrt()
    xhat = (f64(x) - mean) * r
    gb = tree_sum64(g, dims, keepdim=True)
    gw = tree_sum64(g * xhat, dims, keepdim=True)
    scale = r if weight is None else r * f64(weight).reshape(bshape)
    gi = None
    if output_mask[0]:
        if train:
            gi = (scale * ((g - gb / const(x, n)) - xhat * (gw / const(x, n)))).to(F32)
        else:
            gi = (g * scale).to(F32)
    return (
        gi,
        gw.reshape(-1).to(F32) if output_mask[1] and weight is not None else None,
        gb.reshape(-1).to(F32) if output_mask[2] else None,
    )
