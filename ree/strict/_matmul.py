"""The deterministic matmul: fixed-point int8 slices, multiplied exactly, rounded once.

Each row of ``A`` and each column of ``B`` is written in fixed point against its
largest binary exponent ``e`` (read from the float bits of the row maximum), as
the integer ``v = trunc(x * 2**(29 - e))``, |v| < 2**30, and cut into four
byte slices ``s0 .. s3`` (top first): ``v = s0*2**24 + s1*2**16 + s2*2**8 + s3``
with s1..s3 in [-128, 127] and s0 in [-64, 64]. The slices are the bytes of
``(v + 0x808080) ^ 0x808080``, read as signed bytes: the bias makes the low
bytes balanced (zero-mean), so the error of the dropped products does not grow
linearly with K. The product
keeps the ten slice products with ``p + q <= 3``. Products on one anti-diagonal
``d = p + q`` share a power of two, so they are one GEMM over the slices laid
side by side along K. Integer GEMMs are exact while their sums fit, so their
result does not depend on summation order, threads, ISA or device. The four
diagonals are combined in float64 in a fixed order (exactly, while K < 2**16),
scaled by exact powers of two, and rounded once to float32.

Two exact engines compute the same integers, so they give the same bits:

* ``int8``: ``torch._int_mm`` (int8 x int8 -> int32), exact while
  ``K' * 128**2 < 2**31``, K' being the width of one diagonal's GEMM;
* ``float``: a float32 GEMM of the slices, exact while ``K' * 128**2 <= 2**24``
  (every partial sum is then an integer float32 holds exactly, in any order, with
  or without FMA, and even through TF32 or bf16, which hold 8-bit integers).

Error: an element ``b`` binades below its row's (column's) maximum keeps
``30 - b`` bits, and the dropped slice products weigh about ``sqrt(K) * 2**-32``
of ``max|A_i| * max|B_j|``. The documented (and tested) bound is
``max|C - C64| <= 2.5e-7 * max|C64| * max(1, log2 K)``; measured on the 10M
GPT-2's shapes it is 4-5e-8 * max|C64|, where default fp32 gives 3.5-4.3e-7.

Why four slices, measured on an AVX-512 VNNI CPU (no AMX), one thread: an int8
GEMM costs 0.2x an fp32 GEMM of the same shape, so the ten products (diagonal
widths K + 2K + 3K + 4K) cost about 2x fp32. Three slices with ``p + q <= 2``
(6 products) came out 10x less accurate than default fp32; with ``p + q <= 3``
(8 products) 1.4x (Gaussian rows) to 4.6x (heavy-tailed rows) less accurate,
so neither keeps the bound above with a margin. A float64 GEMM costs 1.9-2.5x
fp32 here, and an Ozaki-style float64 scheme needs at least two of them for
float32 accuracy, so it is slower than the int8 one.

Non-finite inputs: an output whose row of ``A`` or column of ``B`` holds an inf or
a nan is nan (IEEE would sometimes give inf; strict mode picks one answer).
Slices are cut with integer shifts of whole words, so byte order plays no part.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import torch

from ree._errors import NondeterminismError
from ree.strict._bits import pow2_f64

SLICES = 4
SLICE_BITS = 8
_FIXED_TOP = 29  # |x| < 2**(e+1) maps to |v| <= 2**30
_BIAS = 0x808080
_MAX_PRODUCT = 128 * 128
INT32_K_LIMIT = (2**31 - 1) // _MAX_PRODUCT  # 131071
FLOAT_K_LIMIT = (2**24) // _MAX_PRODUCT  # 1024
ENGINES = ("auto", "int8", "float")
# elements of an A row block and of an output tile: small enough to stay in cache
_TILE_ELEMS = 1 << 20
# elements of one float64 chunk of the combine: 512 KiB, which a CPU's L2 holds
_COMBINE_CHUNK = 1 << 16
# elements of one chunk of an operand being sliced: 1 MiB of float32. Measured (one
# thread, 1M-element operands): 1.3-1.5 ms against 2.1-2.4 ms with 64K-element
# chunks, whose ten passes each cost more in call overhead than in memory traffic
_SLICE_CHUNK = 1 << 18


_WORKSPACE = threading.local()


def _scratch(
    slot: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A reusable CPU buffer for a value that never leaves this module's functions.

    Fresh multi-megabyte CPU tensors cost page faults on every call (measured: up
    to a third of a tiled matmul's time), so the slicing, the batched GEMMs and
    the combines keep one buffer per slot and thread, grown to the largest size
    asked for; tiles and chunks bound it.
    Other devices get a fresh tensor: their caching allocators reuse memory.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    cache: dict[str, torch.Tensor] = _WORKSPACE.__dict__.setdefault("buffers", {})
    n = math.prod(shape)
    buf = cache.get(slot)
    if buf is None or buf.dtype != dtype or buf.numel() < n:
        buf = cache[slot] = torch.empty(n, dtype=dtype, device=device)
    return buf[:n].view(shape)


def _pow2_f32(k: torch.Tensor) -> torch.Tensor:
    """``2.0**k`` in float32 from bits, for integer ``k`` in [-126, 127]."""
    return ((k.to(torch.int32) + 127) << 23).view(torch.float32)


def _slices(
    x: torch.Tensor, exp: torch.Tensor, top_first: bool, slot: str | None = None
) -> torch.Tensor:
    """Cut float32 ``x`` (..., R, K) into 4 int8 byte slices laid side by side: (..., R, 4K).

    ``x * 2**(29 - exp)`` is exact (a power-of-two scaling; split in two factors
    only when one would leave float32's range), and its truncation is the
    fixed-point value. ``top_first`` lays the slices out s0..s3, else s3..s0.
    ``slot`` names a :func:`_scratch` buffer for the result (else it is fresh).

    On CPUs, an ``x`` whose columns are contiguous (a transposed operand) is cut
    in its own layout: the slices come back as a transposed view, (..., 4K, R)
    in memory, which the int8 GEMM reads as fast as the other layout (measured),
    instead of every pass reading ``x`` across its strides.
    """
    if x.device.type == "cpu" and x.dim() >= 2 and _columns_contiguous(x):
        return _slices_of_columns(x, exp, top_first, slot)
    k = x.shape[-1]
    shape = (*x.shape[:-1], SLICES, k)
    if slot is None:
        out = torch.empty(shape, dtype=torch.int8, device=x.device)
    else:
        out = _scratch(slot, shape, torch.int8, x.device)
    rows, dest = x.reshape(-1, k), out.view(-1, SLICES, k)
    shift = (_FIXED_TOP - exp).reshape(-1, 1)
    split = bool(((shift > 127) | (shift < -126)).any())
    # on CPUs, chunks of rows (_SLICE_CHUNK): the ten elementwise passes then run in
    # the caches instead of streaming the whole operand through memory each time
    n = rows.shape[0]
    step = max(1, _SLICE_CHUNK // max(k, 1)) if x.device.type == "cpu" else max(n, 1)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        _slice_rows(rows[r0:r1], shift[r0:r1], split, dest[r0:r1], top_first)
    return out.view(*x.shape[:-1], SLICES * k)


def _columns_contiguous(x: torch.Tensor) -> bool:
    """Whether ``x``'s last two dims are laid out column by column (``x.mT`` has rows)."""
    return x.shape[-2] > 1 and x.shape[-1] > 1 and x.stride(-2) == 1 and x.stride(-1) != 1


def _slices_of_columns(
    x: torch.Tensor, exp: torch.Tensor, top_first: bool, slot: str | None
) -> torch.Tensor:
    """:func:`_slices` of an ``x`` with contiguous columns, cut along its memory rows."""
    r, k = x.shape[-2], x.shape[-1]
    xt = x.mT.reshape(-1, k, r)
    nb = xt.shape[0]
    shape = (nb, SLICES, k, r)
    if slot is None:
        out = torch.empty(shape, dtype=torch.int8, device=x.device)
    else:
        out = _scratch(slot, shape, torch.int8, x.device)
    shift = (_FIXED_TOP - exp).reshape(nb, 1, r)
    split = bool(((shift > 127) | (shift < -126)).any())
    if k * r <= _SLICE_CHUNK:
        # whole matrices (attention heads) per chunk, several at a time
        step = _SLICE_CHUNK // (k * r)
        for b0 in range(0, nb, step):
            b1 = min(nb, b0 + step)
            _slice_rows(xt[b0:b1], shift[b0:b1], split, out[b0:b1], top_first)
    else:
        step = max(1, _SLICE_CHUNK // r)
        for i in range(nb):
            for k0 in range(0, k, step):
                k1 = min(k, k0 + step)
                dest = out[i : i + 1, :, k0:k1]
                _slice_rows(xt[i : i + 1, k0:k1], shift[i : i + 1], split, dest, top_first)
    return out.view(nb, SLICES * k, r).mT.view(*x.shape[:-2], r, SLICES * k)


def _slice_rows(
    x: torch.Tensor, shift: torch.Tensor, split: bool, dest: torch.Tensor, top_first: bool
) -> None:
    """Write the 4 slices of ``x`` (R, K), scaled by ``2**shift``, into ``dest`` (R, 4, K).

    ``x`` may have more leading dims: the slices go to ``dest[:, j]``, which has
    ``x``'s shape.
    """
    y = _scratch("slice-scaled", tuple(x.shape), torch.float32, x.device)
    if split:
        half = torch.div(shift, 2, rounding_mode="floor")
        torch.mul(x, _pow2_f32(half), out=y).mul_(_pow2_f32(shift - half))
    else:
        torch.mul(x, _pow2_f32(shift), out=y)
    # truncation toward zero onto the 2**-29 grid: exact in float32 -> int32 on every
    # device (torch.round is an order of magnitude slower on CPUs), and sign-symmetric
    w = _scratch("slice-fixed", tuple(x.shape), torch.int32, x.device).copy_(y)
    w.add_(_BIAS).bitwise_xor_(_BIAS)

    def put(s: int, value: torch.Tensor) -> None:
        dest[:, s if top_first else SLICES - 1 - s].copy_(value)

    if x.device.type == "cpu":
        # slice 3 - j is byte j of w read as a signed byte, which is what the
        # int32 -> int8 conversion keeps (it wraps modulo 2**8: test_ops checks it): after each
        # arithmetic shift by 8 the next byte is the low one, and the top byte comes
        # out sign-extended. Whole contiguous int32 words, no byte-strided copies.
        for j in range(SLICES):
            if j:
                w.bitwise_right_shift_(SLICE_BITS)
            put(SLICES - 1 - j, w)
        return
    # byte j of w, read as a signed byte, is slice 3 - j: shifting it to the top and
    # back (arithmetically) gives it in [-128, 127], which int8 holds exactly. The
    # shifts run on whole contiguous int32 words (no byte-strided copies).
    tmp = _scratch("slice-word", tuple(x.shape), torch.int32, x.device)
    top = 32 - SLICE_BITS
    for j in range(SLICES):
        if j == SLICES - 1:
            torch.bitwise_right_shift(w, top, out=tmp)
        else:
            torch.bitwise_left_shift(w, top - SLICE_BITS * j, out=tmp).bitwise_right_shift_(top)
        put(SLICES - 1 - j, tmp)


def _abs_max(x: torch.Tensor) -> torch.Tensor:
    """max|x| along the last dim (keepdim), as ``max(amax, -amin)``: no ``|x|`` tensor.

    The same magnitude (its sign bit aside, for a row of zeros), and nan still
    propagates. An ``x.abs()`` of a multi-megabyte operand costs page faults: the
    two reductions measured 3-7x faster on the 10M GPT-2's largest operands.
    """
    return torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg_())


def _row_exponents(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (last dim) exponent ``e`` with max|x| < 2**(e+1), the finite part, and bad rows.

    The row maximum of |x| is exact in any order, and nan and inf propagate to
    it, which flags the rows to clean. The exponent is read from the float64 bits of the row's largest magnitude, so
    subnormal rows get their true exponent.
    """
    top = _abs_max(x)
    bad = ~torch.isfinite(top)  # amax propagates nan, and inf is its own maximum
    if bool(bad.any()):
        x = torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))
        top = _abs_max(x)
    top = top.to(torch.float64)
    e = ((top.view(torch.int64) >> 52) & 0x7FF) - 1023
    return e.clamp_min(-149).to(torch.int32), x, bad


def _float_mm_exact(lhs: torch.Tensor, rhs_t: torch.Tensor) -> torch.Tensor:
    """``lhs @ rhs_t.T`` for int8 operands with float32 GEMMs, exact chunk by chunk, as int64."""
    total: torch.Tensor | None = None
    for k0 in range(0, lhs.shape[1], FLOAT_K_LIMIT):
        part = torch.matmul(
            lhs[:, k0 : k0 + FLOAT_K_LIMIT].to(torch.float32),
            rhs_t[:, k0 : k0 + FLOAT_K_LIMIT].to(torch.float32).t(),
        ).to(torch.int64)
        total = part if total is None else total + part
    assert total is not None
    return total


def _int_mm_exact(lhs: torch.Tensor, rhs_t: torch.Tensor) -> torch.Tensor:
    """``lhs @ rhs_t.T`` for int8 operands, exact: int32 per K-chunk, int64 across chunks.

    ``rhs_t`` is passed transposed: on CUDA, made contiguous, the kernel sees the
    column-major right operand that cuBLASLt's int8 GEMM wants; on CPUs any
    strides do (every layout of either operand measured the same speed). A GPU
    without an int8 GEMM gets the exact float32 path, which gives the same integers.
    """
    m, n, k = lhs.shape[0], rhs_t.shape[0], lhs.shape[1]
    if lhs.is_cuda:
        # cuBLASLt int8 GEMM wants M > 16 and K, N multiples of 8: zero padding is exact
        pad = torch.nn.functional.pad
        lhs = pad(lhs, (0, (-k) % 8, 0, max(0, 17 - m))).contiguous()
        rhs_t = pad(rhs_t, (0, (-k) % 8, 0, (-n) % 8)).contiguous()
        k = lhs.shape[1]
    try:
        if k <= INT32_K_LIMIT:
            return torch._int_mm(lhs, rhs_t.t())[:m, :n]
        total = torch.zeros((lhs.shape[0], rhs_t.shape[0]), dtype=torch.int64, device=lhs.device)
        step = INT32_K_LIMIT - INT32_K_LIMIT % 8
        for k0 in range(0, k, step):
            total += torch._int_mm(lhs[:, k0 : k0 + step], rhs_t[:, k0 : k0 + step].t())
        return total[:m, :n]
    except RuntimeError:
        if not lhs.is_cuda:
            raise
        return _float_mm_exact(lhs, rhs_t)[:m, :n]


def _diagonals_int8(
    a8: torch.Tensor, b8: torch.Tensor, k: int, scratch: bool = False
) -> list[torch.Tensor]:
    """Anti-diagonal sums of slice products, exact, from int8 slices laid along K.

    ``a8`` is [s0 s1 s2 s3] and ``b8`` is [s3 s2 s1 s0] along K, so diagonal ``d``
    is the product of two contiguous column ranges, with no copy. ``scratch``
    writes the diagonals into :func:`_scratch` buffers (on CPUs, where one int32
    GEMM holds the whole sum).
    """
    pairs = [(a8[:, : (d + 1) * k], b8[:, (SLICES - 1 - d) * k :]) for d in range(SLICES)]
    if not (scratch and a8.device.type == "cpu" and SLICES * k <= INT32_K_LIMIT):
        return [_int_mm_exact(lhs, rhs) for lhs, rhs in pairs]
    shape = (a8.shape[0], b8.shape[0])
    return [
        torch._int_mm(lhs, rhs.t(), out=_scratch(f"diagonal-{d}", shape, torch.int32, a8.device))
        for d, (lhs, rhs) in enumerate(pairs)
    ]


def _diagonals_int8_batched(a8: torch.Tensor, b8: torch.Tensor, k: int) -> list[torch.Tensor]:
    """:func:`_diagonals_int8` for (B, M, 4K) and (B, N, 4K) slices: one GEMM per diagonal and entry.

    CPUs take :func:`_batched_int8` instead where one int32 GEMM holds each sum.
    """
    batch, m, n = a8.shape[0], a8.shape[1], b8.shape[1]
    diags = []
    for d in range(SLICES):
        kd = (d + 1) * k
        out = torch.empty(
            (batch, m, n),
            dtype=torch.int64 if kd > INT32_K_LIMIT else torch.int32,
            device=a8.device,
        )
        lhs, rhs = a8[:, :, :kd], b8[:, :, (SLICES - 1 - d) * k :]
        for i in range(batch):
            out[i] = _int_mm_exact(lhs[i], rhs[i])
        diags.append(out)
    return diags


def _batched_int8(
    a8: torch.Tensor,
    b8: torch.Tensor,
    k: int,
    row_scale: torch.Tensor,
    col_scale: torch.Tensor,
    sink: Sink,
) -> None:
    """The float64 product of (B, M, 4K) and (B, N, 4K) slices on a CPU, a few entries at a time.

    Batched matmuls are many small GEMMs here (attention), so the four diagonal
    GEMMs of a group of entries write small buffers that the combine then reads
    while they are in cache; ``sink(chunk, b0, b1)`` gets the float64 value of
    entries ``b0:b1``, valid until the next group. (Measured against one GEMM per
    entry of the slices stacked along N: the stacking copies, the wasted zero
    products and the combine's strided reads cost more than four times the calls.)
    """
    batch, m, n = a8.shape[0], a8.shape[1], b8.shape[1]
    group = max(1, min(batch, _COMBINE_CHUNK // max(m * n, 1)))
    shape = (group, m, n)
    diags = [_scratch(f"diagonal-{d}", shape, torch.int32, a8.device) for d in range(SLICES)]
    combined = _scratch("combined-chunk", shape, torch.float64, a8.device)
    join = _joins(k, torch.int32)
    if join:
        row_scale = row_scale * 2.0**-SLICE_BITS
    # every view made up front, by one unbind each: the calls are small, so Python's
    # share of them is not
    lhs = [a8[:, :, : (d + 1) * k].unbind(0) for d in range(SLICES)]
    rhs = [b8[:, :, (SLICES - 1 - d) * k :].mT.unbind(0) for d in range(SLICES)]
    outs = [x.unbind(0) for x in diags]
    for b0 in range(0, batch, group):
        b1 = min(batch, b0 + group)
        for i in range(b0, b1):
            for d in range(SLICES):
                torch._int_mm(lhs[d][i], rhs[d][i], out=outs[d][i - b0])
        chunk = combined[: b1 - b0]
        parts = [x[: b1 - b0] for x in diags]
        _combine_into(chunk, parts, row_scale[b0:b1], col_scale[b0:b1], k, join)
        sink(chunk, b0, b1)


def _row_scale(ea: torch.Tensor) -> torch.Tensor:
    """The power of two that takes a :func:`_combine` sum of row exponent ``ea`` to its value.

    D0 weighs ``2**(2*8*(SLICES-1))`` in fixed-point units of ``2**(ea-29) * 2**(eb-29)``;
    the column's ``2**eb`` is the other scale.
    """
    return pow2_f64(ea - 2 * _FIXED_TOP + 2 * SLICE_BITS * (SLICES - 1))


Sink = Callable[[torch.Tensor, int, int], None]


def _lead(scale: torch.Tensor, like: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """Rows ``s:e`` (along ``like``'s first dim) of a scale that broadcasts against ``like``."""
    if scale.dim() < like.dim() or scale.shape[0] == 1:
        return scale
    return scale[s:e]


def _joins(k: int, dtype: torch.dtype) -> bool:
    """Whether :func:`_combine_into` joins diagonal pairs in int32 (its sum is then 2^8 times)."""
    return SLICES == 4 and dtype == torch.int32 and k < 2016


def _combine_into(
    f: torch.Tensor,
    diags: list[torch.Tensor],
    row_scale: torch.Tensor,
    col_scale: torch.Tensor,
    k: int,
    join: bool,
) -> None:
    """Write ``(D0 + D1*2^-8 + D2*2^-16 + D3*2^-24) * row_scale * col_scale`` into float64 ``f``.

    ``diags`` are chunks shaped like ``f``; ``join`` (:func:`_joins`) means the
    sum comes out 2^8 times larger, and ``row_scale`` must carry the 2^-8.
    See :func:`_combine` for why this is exact.
    """
    shape, device = tuple(f.shape), f.device
    w = _scratch("widened", shape, torch.float64, device)
    if join:
        # D0*2^8 + D1 fits int32 while K < 2016 (|D0| <= K*2^12, |D1| <= K*2^14), and
        # D2*2^8 + D3 while K < 254 (|D2| <= K*2^15, |D3| <= K*3*2^14). Such pairs are
        # joined exactly in int32 (in cache), which spares float64 conversions and
        # additions. The sum is then 2^8 times the same exact value, and the row scale
        # takes the 2^-8: the same bits.
        part = _scratch("joined", shape, torch.int32, device)
        f.copy_(torch.add(diags[1], diags[0], alpha=256, out=part))
        if k < 254:
            torch.add(diags[3], diags[2], alpha=256, out=part)
            f.add_(w.copy_(part), alpha=2.0 ** (-2 * SLICE_BITS))
        else:
            f.add_(w.copy_(diags[2]), alpha=2.0**-SLICE_BITS)
            f.add_(w.copy_(diags[3]), alpha=2.0 ** (-2 * SLICE_BITS))
    else:
        f.copy_(diags[0])
        for d in range(1, SLICES):
            f.add_(w.copy_(diags[d]), alpha=2.0 ** (-SLICE_BITS * d))
    f.mul_(row_scale).mul_(col_scale)


def _combine(
    diags: list[torch.Tensor],
    row_scale: torch.Tensor,
    col_scale: torch.Tensor,
    k: int,
    scratch: bool = False,
) -> torch.Tensor:
    """``(D0 + D1*2^-8 + D2*2^-16 + D3*2^-24) * row_scale * col_scale`` in float64.

    Each diagonal is an exact integer, so exact in float64; scaled by a power of
    two it stays exact, and the sum is exact while it stays below 2**53 (in units
    of 2**-24), that is for K below 2**16 (K * 2**36 bounds it). Beyond, the
    additions round, in this fixed order, on every device alike; ``alpha * D`` is
    exact, so a kernel that fuses it into the addition rounds the same. The two
    scalings are exact. (float64, not int64: int64 kernels are several times
    slower on CPUs.) Each diagonal is converted into a scratch buffer first: an
    addition that promotes int32 itself is several times slower on CPUs.

    On CPUs the work runs in chunks along the first dimension (rows, or batch
    entries) of about 64K elements, so the float64 passes stay in cache
    instead of streaming megabytes each (elementwise: the same bits).
    ``scratch``: the result is a :func:`_scratch` buffer, valid until the next call.
    """
    shape, device = tuple(diags[0].shape), diags[0].device
    if scratch:
        t = _scratch("combined", shape, torch.float64, device)
    else:
        t = torch.empty(shape, dtype=torch.float64, device=device)
    lead = shape[0]
    per = math.prod(shape[1:])
    step = max(1, _COMBINE_CHUNK // max(per, 1)) if device.type == "cpu" else lead
    join = _joins(k, diags[0].dtype)
    if join:
        row_scale = row_scale * 2.0**-SLICE_BITS
    for s in range(0, lead, step):
        e = min(lead, s + step)
        parts = [d[s:e] for d in diags]
        _combine_into(t[s:e], parts, _lead(row_scale, t, s, e), _lead(col_scale, t, s, e), k, join)
    return t


def _combine_tile(
    diags: list[torch.Tensor],
    row_scale: torch.Tensor,
    col_scale: torch.Tensor,
    k: int,
    sink: Sink,
) -> None:
    """:func:`_combine` of a 2-D tile, chunk by chunk of rows into one cache-sized buffer.

    ``sink(chunk, s, e)`` gets the float64 value of rows ``s:e``, valid until the
    next chunk: no tile-sized float64 result is written to memory. Other devices
    take the tile in one chunk.
    """
    m, n = diags[0].shape
    cpu = diags[0].device.type == "cpu"
    step = max(1, min(m, _COMBINE_CHUNK // max(n, 1))) if cpu else max(m, 1)
    buf = _scratch("combined-chunk", (step, n), torch.float64, diags[0].device)
    join = _joins(k, diags[0].dtype)
    if join:
        row_scale = row_scale * 2.0**-SLICE_BITS
    for s in range(0, m, step):
        e = min(m, s + step)
        chunk = buf[: e - s]
        _combine_into(chunk, [d[s:e] for d in diags], row_scale[s:e], col_scale, k, join)
        sink(chunk, s, e)


def _diagonals_float(a: torch.Tensor, bt: torch.Tensor, k: int) -> list[torch.Tensor]:
    """Anti-diagonal sums with float32 GEMMs on integer slices, exact chunk by chunk."""
    diags = []
    for d in range(SLICES):
        lhs = a[..., : (d + 1) * k]
        rhs_t = bt[..., (SLICES - 1 - d) * k :]
        kd = lhs.shape[-1]
        total: torch.Tensor | None = None
        for k0 in range(0, kd, FLOAT_K_LIMIT):
            part = torch.matmul(
                lhs[..., k0 : k0 + FLOAT_K_LIMIT], rhs_t[..., k0 : k0 + FLOAT_K_LIMIT].mT
            )
            # each part is an exact integer of at most 2**24: int64 holds it and its sums
            part = part.to(torch.int64)
            total = part if total is None else total + part
        assert total is not None
        diags.append(total)
    return diags


def _pick_engine(engine: str, a: torch.Tensor) -> str:
    if engine not in ENGINES:
        raise NondeterminismError(f"unknown strict matmul engine {engine!r}; use one of {ENGINES}")
    if engine != "auto":
        return engine
    if a.device.type in ("cpu", "cuda") and hasattr(torch, "_int_mm"):
        return "int8"
    return "float"


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype != torch.float32 or b.dtype != torch.float32:
        raise NondeterminismError(
            f"strict matmul takes float32 operands, got {a.dtype} and {b.dtype}; "
            "cast to float32 before the matmul"
        )


def matmul64(
    a: torch.Tensor, b: torch.Tensor, engine: str = "auto", scratch: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a @ b`` in float64 before its final rounding, and the mask of nan outputs.

    The float64 value is the integer slice product, rounded once; callers may add
    to it in float64 (a bias) before rounding once more to float32. Batch
    dimensions broadcast as in :func:`torch.matmul`. ``scratch``: the float64
    value is a :func:`_scratch` buffer, valid until the next strict matmul.
    """
    _check(a, b)
    k = a.shape[-1]
    if k == 0:  # an empty sum (before the row maxima: amax has no empty reduction)
        shape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        zeros = torch.zeros(
            (*shape, a.shape[-2], b.shape[-1]), dtype=torch.float64, device=a.device
        )
        return zeros, zeros.to(torch.bool)
    ea, a_clean, a_bad = _row_exponents(a)
    eb, b_clean, b_bad = _row_exponents(b.mT)
    sa = _slices(a_clean, ea, top_first=True, slot="lhs-slices")
    sb = _slices(b_clean, eb, top_first=False, slot="rhs-slices")
    engine = _pick_engine(engine, a)
    # value = (D0 + D1*2^-8 + ...) * 2^24 * 2^(ea-29) * 2^(eb-29)
    row_scale, col_scale = _row_scale(ea), pow2_f64(eb.mT)
    if engine == "int8" and _cpu_batched(sa, sb, k):
        shape = (sa.shape[0], sa.shape[1], sb.shape[1])
        if scratch:
            total = _scratch("combined", shape, torch.float64, a.device)
        else:
            total = torch.empty(shape, dtype=torch.float64, device=a.device)

        def sink(chunk: torch.Tensor, s: int, e: int) -> None:
            total[s:e] = chunk

        _batched_int8(sa, sb, k, row_scale, col_scale, sink)
    else:
        if engine == "int8" and a.dim() == 2 and b.dim() == 2:
            diags = _diagonals_int8(sa, sb, k)
        elif engine == "int8" and _same_batch(sa, sb):
            diags = _diagonals_int8_batched(sa, sb, k)
        else:
            diags = _diagonals_float(sa.to(torch.float32), sb.to(torch.float32), k)
        total = _combine(diags, row_scale, col_scale, k, scratch=scratch)
    if not (bool(a_bad.any()) or bool(b_bad.any())):
        # all finite: a 0-d mask broadcasts the same, without an output-sized or and any
        return total, torch.zeros((), dtype=torch.bool, device=total.device)
    return total, a_bad | b_bad.mT


def finish(total: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """Round a :func:`matmul64` result once to float32, and put nan where inputs were not finite."""
    out = total.to(torch.float32)
    if bool(bad.any()):
        out = torch.where(bad, torch.full((), float("nan"), device=out.device), out)
    return out


Epilogue = Callable[[torch.Tensor, slice, slice], torch.Tensor]


def matmul_2d(a: torch.Tensor, b: torch.Tensor, epilogue: Epilogue | None = None) -> torch.Tensor:
    """Float32 ``a @ b`` for 2-D operands with the int8 engine, tile by tile.

    Row blocks of ``a`` are sliced, and output tiles combined, while they fit in
    cache; ``epilogue(tile64, rows, cols)`` may change each float64 tile (add a
    bias) before its one rounding to float32. Same bits as :func:`matmul64`.
    """
    _check(a, b)
    m, k = a.shape
    n = b.shape[1]
    if k == 0 or m == 0 or n == 0:
        out64 = torch.zeros((m, n), dtype=torch.float64, device=a.device)
        return (epilogue(out64, slice(0, m), slice(0, n)) if epilogue else out64).to(torch.float32)
    eb, b_clean, b_bad = _row_exponents(b.t())
    b8 = _slices(b_clean, eb, top_first=False, slot="rhs-slices")
    col_scale = pow2_f64(eb.t())
    # row blocks of at least 512 rows keep the int8 GEMMs efficient (measured with
    # K = 64K: 1.55x the time per row at 128 rows, 1.05x at 512); a GPU wants no tiles
    tile = _TILE_ELEMS if a.device.type == "cpu" else 1 << 62
    bm = min(m, max(512, tile // k))
    bn = min(n, max(256, tile // bm))
    out = torch.empty((m, n), dtype=torch.float32, device=a.device)
    a_bad_all = []
    for r0 in range(0, m, bm):
        rows = slice(r0, min(m, r0 + bm))
        ea, a_clean, a_bad = _row_exponents(a[rows])
        a_bad_all.append(a_bad)
        a8 = _slices(a_clean, ea, top_first=True, slot="lhs-slices")
        row_scale = _row_scale(ea)
        for c0 in range(0, n, bn):
            cols = slice(c0, min(n, c0 + bn))
            diags = _diagonals_int8(a8, b8[cols], k, scratch=True)

            def sink(chunk: torch.Tensor, s: int, e: int, r0: int = r0, cols: slice = cols) -> None:
                sub = slice(r0 + s, r0 + e)
                out[sub, cols] = epilogue(chunk, sub, cols) if epilogue else chunk

            _combine_tile(diags, row_scale, col_scale[:, cols], k, sink)
    a_bad = torch.cat(a_bad_all)
    if bool(a_bad.any()) or bool(b_bad.any()):
        out = torch.where(a_bad | b_bad.t(), torch.full((), float("nan"), device=out.device), out)
    return out


def strict_matmul(a: torch.Tensor, b: torch.Tensor, engine: str = "auto") -> torch.Tensor:
    """``a @ b`` for float32 ``(..., M, K)`` and ``(..., K, N)``, bitwise identical everywhere.

    Batch dimensions broadcast as in :func:`torch.matmul`. ``engine`` picks the
    exact integer engine ("auto": int8 on CPU and CUDA for 2-D and same-batch 3-D
    operands, else float); all engines return the same bits.
    """
    picked = _pick_engine(engine, a)
    if picked == "int8" and a.dim() == 2 and b.dim() == 2:
        return matmul_2d(a, b)
    if picked == "int8" and a.device.type == "cpu" and _same_batch(a, b) and a.shape[-1] > 0:
        return _strict_bmm(a, b)
    return finish(*matmul64(a, b, engine, scratch=True))


def _same_batch(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dim() == 3 and b.dim() == 3 and a.shape[0] == b.shape[0]


def _cpu_batched(sa: torch.Tensor, sb: torch.Tensor, k: int) -> bool:
    """Whether slices ``sa``, ``sb`` take :func:`_batched_int8` (CPU, int32 sums)."""
    return sa.device.type == "cpu" and _same_batch(sa, sb) and SLICES * k <= INT32_K_LIMIT


def _strict_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`strict_matmul` of same-batch 3-D CPU operands: each group rounded to float32 in cache.

    The same bits as ``finish(*matmul64(a, b))``, without a batch-sized float64 result.
    """
    _check(a, b)
    ea, a_clean, a_bad = _row_exponents(a)
    eb, b_clean, b_bad = _row_exponents(b.mT)
    k = a.shape[-1]
    sa = _slices(a_clean, ea, top_first=True, slot="lhs-slices")
    sb = _slices(b_clean, eb, top_first=False, slot="rhs-slices")
    out = torch.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=torch.float32, device=a.device)
    if not _cpu_batched(sa, sb, k):
        return finish(*matmul64(a, b, "int8", scratch=True))

    def sink(chunk: torch.Tensor, s: int, e: int) -> None:
        out[s:e] = chunk

    _batched_int8(sa, sb, k, _row_scale(ea), pow2_f64(eb.mT), sink)
    if bool(a_bad.any()) or bool(b_bad.any()):
        out = torch.where(a_bad | b_bad.mT, torch.full((), float("nan"), device=out.device), out)
    return out
