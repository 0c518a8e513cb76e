"""Strict implementations of the matmul family and of the scatter-adds (embedding backward).

mm, addmm, bmm, baddbmm, mv and dot all map onto :func:`~ree.strict._matmul.matmul64`;
``linear`` and ``matmul`` decompose into these before the mode sees them, and so
do their backwards (which are mms of transposes).
"""

from __future__ import annotations

from typing import Any

import torch

from ree.strict._bits import exponent_f32, pow2_f64
from ree.strict._matmul import finish, matmul64, matmul_2d, strict_matmul
from ree.strict._registry import f64, handles, require_f32

aten = torch.ops.aten


def _scaled(total: torch.Tensor, alpha: float) -> torch.Tensor:
    return total if alpha == 1 else total * float(alpha)


def _addmm_like(
    name: str, bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta: float, alpha: float
) -> torch.Tensor:
    require_f32(name, bias, a, b)
    if a.dim() == 2 and b.dim() == 2 and a.device.type in ("cpu", "cuda"):
        full = bias.expand(a.shape[0], b.shape[1])

        def epilogue(tile: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
            tile = _scaled(tile, alpha)
            # the bias joins in float64, so the output is rounded once
            return tile if beta == 0 else tile + _scaled(f64(full[rows, cols]), beta)

        return matmul_2d(a, b, epilogue)
    total, bad = matmul64(a, b)
    total = _scaled(total, alpha)
    if beta != 0:
        # the bias joins in float64, so the output is rounded once
        total = total + _scaled(f64(bias), beta)
    return finish(total, bad)


@handles(aten.mm.default, aten.bmm.default)
def _mm(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    require_f32("mm", a, b)
    return strict_matmul(a, b)


@handles(aten.addmm.default)
def _addmm(
    ctx: Any,
    bias: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    beta: float = 1,
    alpha: float = 1,
) -> torch.Tensor:
    return _addmm_like("addmm", bias, a, b, beta, alpha)


@handles(aten.baddbmm.default)
def _baddbmm(
    ctx: Any,
    bias: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    beta: float = 1,
    alpha: float = 1,
) -> torch.Tensor:
    return _addmm_like("baddbmm", bias, a, b, beta, alpha)


@handles(aten.mv.default)
def _mv(ctx: Any, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    require_f32("mv", a, v)
    return finish(*matmul64(a, v.unsqueeze(-1))).squeeze(-1)


@handles(aten.dot.default)
def _dot(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    require_f32("dot", a, b)
    return finish(*matmul64(a.unsqueeze(0), b.unsqueeze(-1))).reshape(())


def _bits_needed(n: int) -> int:
    return max(n, 1).bit_length()


def exact_scatter_add(out_numel: int, dest: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``zeros(out_numel).index_add_(0, dest, values)`` in float64, with no order to matter.

    Each destination gets its own exponent, the largest among the values it
    receives (max is exact in any order); every value is written as an integer
    against it, with headroom for all N summands inside int64, and the integers
    are added, exactly. Values more than ``61 - log2(N) - 24`` binades below the
    largest value of their destination lose low bits. A destination that receives
    an inf or a nan comes out nan.
    """
    dest = dest.reshape(-1)
    values = values.reshape(-1)
    n = values.numel()
    finite = torch.isfinite(values)
    clean = torch.where(finite, values, torch.zeros((), dtype=values.dtype, device=values.device))
    top = 61 - _bits_needed(n)
    exps = torch.full((out_numel,), -126, dtype=torch.int32, device=values.device)
    exps.scatter_reduce_(0, dest, exponent_f32(clean), "amax")
    # |x| < 2**(e+1), so |v| < 2**top and n of them stay below 2**62
    shift = (top - 1 - exps).to(torch.int64)
    v = (f64(clean) * pow2_f64(shift[dest])).round().to(torch.int64)
    acc = torch.zeros(out_numel, dtype=torch.int64, device=values.device)
    # index_put_ with accumulate has a deterministic (sorted) CUDA path; on integers
    # any order gives the same sum anyway
    acc.index_put_((dest,), v, accumulate=True)
    out = acc.to(torch.float64) * pow2_f64(-shift)
    bad = torch.zeros(out_numel, dtype=torch.int64, device=values.device)
    bad.index_put_((dest,), (~finite).to(torch.int64), accumulate=True)
    if bool(bad.any()):
        out = torch.where(
            bad > 0, torch.full((), float("nan"), dtype=out.dtype, device=out.device), out
        )
    return out


@handles(aten.embedding_dense_backward.default)
def _embedding_backward(
    ctx: Any,
    grad: torch.Tensor,
    indices: torch.Tensor,
    num_weights: int,
    padding_idx: int,
    scale_grad_by_freq: bool,
) -> torch.Tensor:
    """Scatter-add of token gradients into embedding rows (see :func:`exact_scatter_add`).

    Only the rows that some index names receive gradients, so the sum runs over
    those rows alone (a dense sum gives every other row +0, as the zeros here do).
    """
    require_f32("embedding_dense_backward", grad)
    d = grad.shape[-1]
    g = grad.reshape(-1, d)
    idx = indices.reshape(-1).long()  # int32 indices too: index_copy_ takes int64 only
    keep = idx != padding_idx
    g = torch.where(keep.unsqueeze(1), g, torch.zeros((), dtype=g.dtype, device=g.device))
    used, slot = torch.unique(idx, sorted=True, return_inverse=True)
    rows = (slot.unsqueeze(1) * d + torch.arange(d, device=g.device)).reshape(-1)
    part = exact_scatter_add(used.numel() * d, rows, g).reshape(-1, d)
    if scale_grad_by_freq:
        counts = torch.zeros(used.numel(), dtype=torch.int64, device=g.device)
        counts.index_put_((slot,), keep.to(torch.int64), accumulate=True)
        part = part / counts.clamp_min(1).to(torch.float64).unsqueeze(1)
    out = torch.zeros((num_weights, d), dtype=torch.float32, device=g.device)
    # the rows are distinct, so no two writes meet; index_copy_ refuses an index out of range
    return out.index_copy_(0, used, part.to(torch.float32))


@handles(aten.max_pool2d_with_indices_backward.default)
def _max_pool2d_backward(ctx: Any, grad: torch.Tensor, x: torch.Tensor, *args: Any) -> torch.Tensor:
    """Each output's gradient goes to its argmax; overlapping windows add up exactly."""
    require_f32("max_pool2d_backward", grad, x)
    indices = args[-1]
    planes = x.shape[0] * x.shape[1] if x.dim() == 4 else x.shape[0]
    hw = x.shape[-2] * x.shape[-1]
    plane = torch.arange(planes, device=x.device).unsqueeze(1) * hw
    dest = (indices.reshape(planes, -1) + plane).reshape(-1)
    return exact_scatter_add(planes * hw, dest, grad).to(torch.float32).reshape(x.shape)


def _linear_dest(
    shape: torch.Size, dim: int, index: torch.Tensor, out_shape: torch.Size
) -> torch.Tensor:
    """Flat positions in a contiguous ``out_shape`` tensor of scatter targets along ``dim``."""
    strides = torch.empty(out_shape, device="meta").stride()
    lin = index.to(torch.int64) * strides[dim]
    for d, size in enumerate(shape):
        if d != dim:
            coord = torch.arange(size, device=index.device) * strides[d]
            lin = lin + coord.reshape([-1 if i == d else 1 for i in range(len(shape))])
    return lin.reshape(-1)


@handles(aten.scatter_add.default)
def _scatter_add(
    ctx: Any, x: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor
) -> torch.Tensor:
    require_f32("scatter_add", x, src)
    dim = dim % max(x.dim(), 1)
    src = src[tuple(slice(0, s) for s in index.shape)]
    dest = _linear_dest(index.shape, dim, index, x.shape)
    total = exact_scatter_add(x.numel(), dest, src).reshape(x.shape)
    # the existing values join in float64: one rounding for the result
    return (f64(x) + total).to(torch.float32)


@handles(aten.index_add.default)
def _index_add(
    ctx: Any, x: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor, *, alpha: float = 1
) -> torch.Tensor:
    require_f32("index_add", x, src)
    dim = dim % max(x.dim(), 1)
    shape = list(src.shape)
    full_index = index.reshape([-1 if i == dim else 1 for i in range(src.dim())]).expand(shape)
    dest = _linear_dest(src.shape, dim, full_index, x.shape)
    total = exact_scatter_add(x.numel(), dest, src).reshape(x.shape)
    if alpha != 1:
        total = total * float(alpha)
    return (f64(x) + total).to(torch.float32)
