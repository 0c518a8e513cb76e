"""Strict convolutions: 1-d and 2-d, grouped (depthwise too) and transposed, with backwards.

Every form is an exact copy (im2col, which only moves values) around the strict
matmul, and the transposed form and the input gradient add their columns back
into the image with a fixed order of float64 additions (:func:`_fold64`). Groups
are the batch dimension of one batched strict matmul, so a grouped convolution
costs one call however many groups it has. A 1-d convolution is the 2-d one on a
height-1 image, which gives the same values.
"""

from __future__ import annotations

from typing import Any

import torch

from ree._errors import NondeterminismError
from ree.strict._matmul import matmul64
from ree.strict._reduce import tree_sum64
from ree.strict._registry import f64, handles, require_f32

aten = torch.ops.aten
Pair = tuple[int, int]


def _with_nan(total: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    if bool(bad.any()):
        return torch.where(
            bad, torch.full((), float("nan"), dtype=total.dtype, device=total.device), total
        )
    return total


def _pairs(x: torch.Tensor, *params: Any) -> tuple[torch.Tensor, list[Pair]]:
    """The input as 4-d, and each geometry parameter as a pair (a 1-d conv gets height 1)."""
    if x.dim() == 4:
        return x, [(int(p[0]), int(p[1])) for p in params]
    if x.dim() == 3:
        # height 1: stride, dilation 1, padding 0 and output padding 0 along it
        neutral = (1, 0, 1, 0)
        return x.unsqueeze(2), [(n, int(p[0])) for n, p in zip(neutral, params, strict=True)]
    raise NondeterminismError(
        f"strict mode implements 1-d and 2-d convolutions, got a {x.dim()}-d input; "
        "reshape to 2-d, or train in mode='device'"
    )


def _cols(
    x: torch.Tensor, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair
) -> torch.Tensor:
    """(C*kh*kw, N*L) patches of ``x``: a copy, so exact. Rows are channel-major."""
    cols = torch.nn.functional.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.permute(1, 0, 2).reshape(cols.shape[1], -1)


def _fold64(
    gcols: torch.Tensor,
    shape: tuple[int, ...],
    kernel: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    grid: Pair,
) -> torch.Tensor:
    """col2im in float64 with a fixed order: one strided add per kernel offset.

    ``gcols`` is (C*kh*kw, N*gh*gw) for an image of ``shape`` (N, C, H, W) and a
    ``grid`` of gh x gw kernel positions.
    """
    n, c, h, w = shape
    kh, kw = kernel
    gh, gw = grid
    g = gcols.reshape(c, kh, kw, n, gh, gw)
    img = torch.zeros(
        (n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype=torch.float64, device=gcols.device
    )
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            view = img[
                :,
                :,
                r0 : r0 + stride[0] * (gh - 1) + 1 : stride[0],
                c0 : c0 + stride[1] * (gw - 1) + 1 : stride[1],
            ]
            view += g[:, i, j].permute(1, 0, 2, 3)
    return img[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w]


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(G*R, C) -> (G, R, C): groups as a batch dimension (a view)."""
    return t.reshape(groups, t.shape[0] // groups, t.shape[1])


def _mm64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Strict ``a @ b`` (2-d, or batched by group) in float64, nan where inputs were not finite."""
    if a.shape[0] == 1 and a.dim() == 3:
        total, bad = matmul64(a[0], b[0])
        return _with_nan(total, bad).unsqueeze(0)
    return _with_nan(*matmul64(a, b))


def _conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    geom: list[Pair],
    groups: int,
) -> torch.Tensor:
    stride, padding, dilation, _ = geom
    n, _, h, w = x.shape
    o, cg, kh, kw = weight.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = _grouped(_cols(x, (kh, kw), stride, padding, dilation), groups)
    total = _mm64(weight.reshape(groups, o // groups, cg * kh * kw), cols).reshape(o, -1)
    if bias is not None:
        total = total + f64(bias).unsqueeze(1)
    return total.to(torch.float32).reshape(o, n, ho, wo).permute(1, 0, 2, 3).contiguous()


def _conv_transposed(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    geom: list[Pair],
    groups: int,
) -> torch.Tensor:
    stride, padding, dilation, out_pad = geom
    n, cin, h, w = x.shape
    _, og, kh, kw = weight.shape
    ho = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + out_pad[0] + 1
    wo = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + out_pad[1] + 1
    x2 = _grouped(x.permute(1, 0, 2, 3).reshape(cin, -1), groups)
    w2 = weight.reshape(groups, cin // groups, og * kh * kw).transpose(1, 2)
    cols = _mm64(w2, x2).reshape(groups * og * kh * kw, -1)
    img = _fold64(cols, (n, groups * og, ho, wo), (kh, kw), stride, padding, dilation, (h, w))
    if bias is not None:
        img = img + f64(bias).reshape(1, -1, 1, 1)
    return img.to(torch.float32).contiguous()


@handles(aten.convolution.default)
def _convolution(
    ctx: Any,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
) -> torch.Tensor:
    require_f32("convolution", x, weight, bias)
    one_d = x.dim() == 3
    x4, geom = _pairs(x, stride, padding, dilation, output_padding)
    w4 = weight.unsqueeze(2) if one_d else weight
    run = _conv_transposed if transposed else _conv
    out = run(x4, w4, bias, geom, groups)
    return out.squeeze(2) if one_d else out


def _backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    geom: list[Pair],
    groups: int,
    mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Input and weight gradients of a (not transposed) grouped 2-d convolution."""
    stride, padding, dilation, _ = geom
    o, cg, kh, kw = weight.shape
    ho, wo = grad.shape[2], grad.shape[3]
    g2 = _grouped(grad.permute(1, 0, 2, 3).reshape(o, -1), groups)  # (G, O/G, N*L)
    w2 = weight.reshape(groups, o // groups, cg * kh * kw)
    gi = gw = None
    if mask[0]:
        cols = _mm64(w2.transpose(1, 2), g2).reshape(groups * cg * kh * kw, -1)
        img = _fold64(cols, tuple(x.shape), (kh, kw), stride, padding, dilation, (ho, wo))
        gi = img.to(torch.float32).contiguous()
    if mask[1]:
        cols = _grouped(_cols(x, (kh, kw), stride, padding, dilation), groups)
        gw = _mm64(g2, cols.transpose(1, 2)).to(torch.float32).reshape(weight.shape)
    return gi, gw


def _backward_transposed(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    geom: list[Pair],
    groups: int,
    mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Input and weight gradients of a grouped transposed 2-d convolution."""
    stride, padding, dilation, _ = geom
    n, cin, h, w = x.shape
    _, og, kh, kw = weight.shape
    # the gradient's patches on the input's grid: a (not transposed) convolution's im2col
    gcols = _grouped(_cols(grad, (kh, kw), stride, padding, dilation), groups)
    w2 = weight.reshape(groups, cin // groups, og * kh * kw)
    gi = gw = None
    if mask[0]:
        total = _mm64(w2, gcols).reshape(cin, n, h, w)
        gi = total.to(torch.float32).permute(1, 0, 2, 3).contiguous()
    if mask[1]:
        x2 = _grouped(x.permute(1, 0, 2, 3).reshape(cin, -1), groups)
        gw = _mm64(x2, gcols.transpose(1, 2)).to(torch.float32).reshape(weight.shape)
    return gi, gw


@handles(aten.convolution_backward.default)
def _convolution_backward(
    ctx: Any,
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    require_f32("convolution_backward", grad, x, weight)
    one_d = x.dim() == 3
    x4, geom = _pairs(x, stride, padding, dilation, output_padding)
    g4 = grad.unsqueeze(2) if one_d else grad
    w4 = weight.unsqueeze(2) if one_d else weight
    run = _backward_transposed if transposed else _backward
    gi, gw = run(g4, x4, w4, geom, groups, output_mask)
    gb = tree_sum64(g4, [0, 2, 3]).to(torch.float32) if output_mask[2] else None
    if one_d:
        gi = gi.squeeze(2) if gi is not None else None
        gw = gw.squeeze(2) if gw is not None else None
    return gi, gw, gb
