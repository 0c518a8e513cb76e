"""Cache-sized chunking for the float64 elementwise pipelines of strict ops.

A strict transcendental is some 25 float64 tensor ops; on a large tensor each
one streams the whole tensor through memory. Run on chunks of about 64K
elements, the same ops stay in cache (measured: 7x faster for exp over 16M
elements on one CPU core). Chunks split whole rows or independent elements, so
the result is the same bits as without chunking.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CHUNK = 1 << 16


def _chunk(device: torch.device) -> int:
    # a GPU wants few large kernels; chunking is for CPU caches
    return CHUNK if device.type == "cpu" else 1 << 62


def map_elementwise(
    fn: Callable[..., torch.Tensor], *xs: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``fn(*xs)`` elementwise (after broadcasting), chunk by chunk, cast to ``dtype``."""
    xs = torch.broadcast_tensors(*xs)
    shape = xs[0].shape
    flat = [x.reshape(-1) for x in xs]
    n = flat[0].numel()
    chunk = _chunk(flat[0].device)
    if n <= chunk:
        return fn(*flat).to(dtype).reshape(shape)
    out = torch.empty(n, dtype=dtype, device=flat[0].device)
    for s in range(0, n, chunk):
        out[s : s + chunk] = fn(*(f[s : s + chunk] for f in flat))
    return out.reshape(shape)


def _rows(dim: int, xs: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], torch.Size, int]:
    """The inputs broadcast, with ``dim`` moved last, as 2-D (rows, len) tensors; the moved shape; the step."""
    xs = torch.broadcast_tensors(*xs)
    moved = [x.movedim(dim, -1) for x in xs]
    mshape = moved[0].shape
    length = mshape[-1] if len(mshape) else 1
    rows = [m.reshape(-1, length) for m in moved]
    return rows, mshape, max(1, _chunk(rows[0].device) // max(length, 1))


def map_rows(
    fn: Callable[..., torch.Tensor],
    dim: int,
    *xs: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    per_row: tuple[torch.Tensor, ...] = (),
) -> torch.Tensor:
    """``fn(*rows)`` where each input is cut into rows along ``dim`` (moved last), in chunks of rows.

    ``fn`` receives 2-D (rows, len) tensors and returns one of the same shape.
    Each ``per_row`` tensor has one row per input row (as :func:`reduce_rows`
    returns) and reaches ``fn`` after the inputs, cut into the same chunks.
    """
    rows, mshape, step = _rows(dim, xs)
    length = rows[0].shape[-1]
    r = rows[0].shape[0]
    if r <= step:
        out = fn(*rows, *per_row).to(dtype)
    else:
        out = torch.empty((r, length), dtype=dtype, device=rows[0].device)
        for s in range(0, r, step):
            out[s : s + step] = fn(*(x[s : s + step] for x in (*rows, *per_row)))
    out = out.reshape(mshape)
    last = xs[0].dim() == 0 or dim % xs[0].dim() == xs[0].dim() - 1
    return out if last else out.movedim(-1, dim).contiguous()


def reduce_rows(fn: Callable[..., torch.Tensor], dim: int, *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*rows)`` on chunks of rows as :func:`map_rows` cuts them; ``fn`` returns (rows, k).

    The chunks' results are concatenated into one (rows, k) tensor.
    """
    rows, _, step = _rows(dim, xs)
    r = rows[0].shape[0]
    if r <= step:
        return fn(*rows)
    return torch.cat([fn(*(x[s : s + step] for x in rows)) for s in range(0, r, step)])
