"""Per-op accuracy of strict mode against float64 references, special values included."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from ree.strict import enter_strict

F32 = torch.float32
TINY = 2.0**-149  # the smallest float32 subnormal
SPECIAL = [
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    TINY,
    -TINY,
    1e-40,
    -1e-40,
    1e-30,
    3.4e38,
    -3.4e38,
]


def _inputs(lo: float, hi: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    grid = torch.linspace(lo, hi, 4001, dtype=torch.float64)
    rnd = torch.rand(4000, generator=g, dtype=torch.float64) * (hi - lo) + lo
    small = torch.logspace(-30, 0, 300, dtype=torch.float64)
    return torch.cat([grid, rnd, small, -small, torch.tensor(SPECIAL, dtype=torch.float64)]).to(F32)


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in float32 ulps (0 where both are the same nan/inf)."""

    def ordered(x: torch.Tensor) -> torch.Tensor:
        i = x.contiguous().view(torch.int32).to(torch.int64)
        return torch.where(i < 0, -(i & 0x7FFFFFFF), i)

    d = (ordered(a) - ordered(b)).abs()
    both_nan = torch.isnan(a) & torch.isnan(b)
    return torch.where(both_nan, torch.zeros_like(d), d)


def _phi(x: torch.Tensor) -> torch.Tensor:
    # not torch.special.ndtr: in float64 it is 0.5 * (1 + erf) and loses the lower tail
    return 0.5 * torch.special.erfc(-x / math.sqrt(2))


# op under strict mode, float64 reference, input range, allowed ulps
UNARY: dict[
    str,
    tuple[
        Callable[[torch.Tensor], torch.Tensor],
        Callable[[torch.Tensor], torch.Tensor],
        float,
        float,
        int,
    ],
] = {
    "exp": (torch.exp, torch.exp, -110.0, 90.0, 1),
    "expm1": (torch.expm1, torch.expm1, -30.0, 90.0, 1),
    "log": (torch.log, torch.log, 0.0, 1e4, 1),
    "log1p": (torch.log1p, torch.log1p, -0.99, 1e4, 1),
    "tanh": (torch.tanh, torch.tanh, -20.0, 20.0, 1),
    "sigmoid": (torch.sigmoid, torch.sigmoid, -110.0, 110.0, 1),
    "erf": (torch.erf, torch.erf, -6.0, 6.0, 1),
    "gelu": (F.gelu, lambda x: x * _phi(x), -12.0, 12.0, 1),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        # x * sigmoid(2u) = x * (1 + tanh u) / 2, without the cancellation at very negative x
        lambda x: x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)),
        -12.0,
        12.0,
        2,
    ),
    "silu": (F.silu, lambda x: x * torch.sigmoid(x), -90.0, 90.0, 1),
    "rsqrt": (torch.rsqrt, torch.rsqrt, 0.0, 1e6, 1),
    "pow3": (lambda x: x**3, lambda x: x**3, -40.0, 40.0, 1),
    "pow1.5": (lambda x: x**1.5, lambda x: x**1.5, 0.0, 1e3, 1),
    "reciprocal": (torch.reciprocal, torch.reciprocal, -10.0, 10.0, 0),
    "sin": (torch.sin, torch.sin, -1e5, 1e5, 1),
    "cos": (torch.cos, torch.cos, -1e5, 1e5, 1),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_within_ulps_of_float64(name: str) -> None:
    op, ref, lo, hi, tol = UNARY[name]
    x = _inputs(lo, hi)
    if name in ("sin", "cos"):
        x = x[~(x.abs() > 1e6)]  # larger arguments are refused: see the next test
    with enter_strict():
        got = op(x)
    want = ref(x.double()).to(F32)
    err = ulps(got, want)
    # special values must agree exactly in class (nan, inf and its sign, zero)
    assert torch.equal(torch.isnan(got), torch.isnan(want)), name
    finite = torch.isfinite(want)
    assert torch.equal(got[~finite & ~torch.isnan(want)], want[~finite & ~torch.isnan(want)])
    worst = int(err[finite].max())
    assert worst <= tol, (name, worst, x[finite][err[finite].argmax()].item())


def test_sin_cos_refuse_arguments_beyond_exact_reduction() -> None:
    from ree._errors import NondeterminismError

    with enter_strict(), pytest.raises(NondeterminismError, match="sin/cos"):
        torch.sin(torch.tensor([1.0, 3e38]))


def test_activation_gradients_match_float64() -> None:
    x = _inputs(-8, 8)[: -len(SPECIAL)].requires_grad_()
    for fn in (lambda t: F.gelu(t, approximate="tanh"), F.gelu, F.silu):
        with enter_strict():
            (g,) = torch.autograd.grad(fn(x).sum(), x)
        xd = x.detach().double().requires_grad_()
        (gd,) = torch.autograd.grad(fn(xd).sum(), xd)
        # absolute slack: torch's float64 formulas themselves cancel in the far tails
        assert ((g.double() - gd).abs() <= 3e-7 * gd.abs() + 1e-12).all()


@pytest.mark.parametrize(
    ("fn", "deriv"),
    [(torch.tanh, lambda y: 1 - y * y), (torch.sigmoid, lambda y: y * (1 - y))],
)
def test_backward_from_saved_output_is_rounded_once(
    fn: Callable[[torch.Tensor], torch.Tensor], deriv: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """tanh and sigmoid backward use the saved float32 output, as torch's do; then one rounding."""
    x = _inputs(-8, 8)[: -len(SPECIAL)].requires_grad_()
    with enter_strict():
        y = fn(x)
        (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, deriv(y.detach().double()).to(F32))


def test_matmul_engines_give_the_same_bits_and_beat_default_accuracy() -> None:
    from ree.strict import strict_matmul

    g = torch.Generator().manual_seed(0)
    for m, k, n in ((1, 1, 1), (3, 5, 7), (33, 300, 17), (8, 5000, 3)):
        a = torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 100
        b = torch.randn(k, n, generator=g)
        i8 = strict_matmul(a, b, "int8")
        fl = strict_matmul(a, b, "float")
        assert torch.equal(i8, fl)
        ref = a.double() @ b.double()
        scale = ref.abs().max().item()
        assert (i8.double() - ref).abs().max().item() <= 2.5e-7 * scale * max(1, math.log2(k))


def test_matmul_of_views_batches_and_nonfinite() -> None:
    from ree.strict import strict_matmul

    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 3, 6, 5, generator=g)
    b = torch.randn(2, 3, 4, 5, generator=g).transpose(-1, -2)  # non-contiguous
    c = strict_matmul(a, b)
    assert torch.equal(c[1, 2], strict_matmul(a[1, 2].contiguous(), b[1, 2].contiguous()))
    a2 = a[0, 0].clone()
    a2[1, 2] = math.inf
    c2 = strict_matmul(a2, b[0, 0])
    assert torch.isnan(c2[1]).all()
    assert torch.isfinite(c2[0]).all()


@pytest.mark.parametrize(
    "shapes", [((0, 3), (3, 4)), ((2, 0), (0, 4)), ((5, 2, 0), (5, 0, 3)), ((4, 0), (0,))]
)
def test_matmul_with_an_empty_dimension_matches_torch(shapes: tuple[tuple[int, ...], ...]) -> None:
    a, b = (torch.randn(s) for s in shapes)
    with enter_strict():
        c = torch.matmul(a, b)
        grads = torch.randn(c.shape)
    assert torch.equal(c, torch.matmul(a, b))  # all zeros where the sum is empty
    ref = a.clone().requires_grad_(True)
    torch.matmul(ref, b).backward(grads)
    a.requires_grad_(True)
    with enter_strict():
        torch.matmul(a, b).backward(grads)
    assert a.grad is not None
    assert torch.equal(a.grad, ref.grad)


def test_matmul_handles_subnormal_and_huge_rows() -> None:
    from ree.strict import strict_matmul

    a = torch.tensor([[1e-40, -3e-41], [3e38, 1e38]], dtype=F32)
    b = torch.tensor([[1e30, 0.0], [1.0, 1.0]], dtype=F32)
    got = strict_matmul(a, b)
    want = (a.double() @ b.double()).to(F32)
    assert torch.equal(got, want)


def test_sum_mean_var_match_float64_rounded_once() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(37, 129, generator=g) * torch.logspace(-5, 5, 129).to(F32)
    with enter_strict():
        s = x.sum(0)
        m = x.mean(1, keepdim=True)
        v = x.var(0)
        total = x.sum()
    xd = x.double()
    assert int(ulps(s, xd.sum(0).to(F32)).max()) <= 1
    assert int(ulps(m, xd.mean(1, keepdim=True).to(F32)).max()) <= 1
    assert int(ulps(v, xd.var(0).to(F32)).max()) <= 1
    assert int(ulps(total, xd.sum().to(F32)).max()) <= 1


def test_softmax_losses_and_layer_norm_match_float64() -> None:
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(6, 10, generator=g) * 5).requires_grad_()
    t = torch.tensor([0, 3, 9, 1, -100, 2])
    w = torch.randn(10, generator=g).requires_grad_()
    b = torch.randn(10, generator=g).requires_grad_()

    def losses(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (
            F.cross_entropy(x, t)
            + F.mse_loss(x.softmax(-1), x.sigmoid())
            + F.layer_norm(x, (10,), w, b).pow(2).mean()
            + F.nll_loss(x.log_softmax(-1), t, reduction="sum") * 0.1
        )

    with enter_strict():
        y = losses(x, w, b)
        grads = torch.autograd.grad(y, (x, w, b))
    xd, wd, bd = (v.detach().double().requires_grad_() for v in (x, w, b))
    yd = losses(xd, wd, bd)
    gds = torch.autograd.grad(yd, (xd, wd, bd))
    assert abs(y.item() - yd.item()) <= 4e-7 * abs(yd.item())
    for ga, gb in zip(grads, gds, strict=True):
        assert (ga.double() - gb).abs().max().item() <= 1e-6 * gb.abs().max().item()


def test_softmax_special_rows() -> None:
    x = torch.tensor([[-math.inf, -math.inf], [0.0, -math.inf], [math.nan, 1.0]])
    with enter_strict():
        y = torch.softmax(x, -1)
    assert torch.isnan(y[0]).all()
    assert torch.equal(y[1], torch.tensor([1.0, 0.0]))
    assert torch.isnan(y[2]).all()


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_embedding_backward_is_exact_for_representable_sums(index_dtype: torch.dtype) -> None:
    weight = torch.zeros(5, 3, requires_grad=True)
    idx = torch.tensor([1, 1, 4, 1, 0], dtype=index_dtype)  # nn.Embedding takes int32 too
    grad = torch.tensor([[1.0, 2.0**-20, 3.0]] * 5) * torch.arange(1, 6).to(F32).unsqueeze(1)
    with enter_strict():
        (gw,) = torch.autograd.grad(F.embedding(idx, weight), weight, grad)
    want = torch.zeros(5, 3, dtype=torch.float64).index_add_(0, idx.long(), grad.double()).to(F32)
    assert torch.equal(gw, want)


@pytest.mark.parametrize("p", [2.0, 3.0, 1.5, -1.0])
def test_pow_of_a_transposed_tensor_keeps_its_layout(p: float) -> None:
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(8)).add_(0.5).t()
    with enter_strict():
        y = x**p
    assert y.stride() == (x**p).stride() == x.stride()
    assert torch.equal(y.t().reshape(-1), y.t().view(-1))  # a caller may view it as torch's


def test_int32_to_int8_conversion_wraps_as_the_cpu_slicing_needs() -> None:
    # the strict matmul takes each byte of a word by this conversion on CPUs (_matmul._slices):
    # a torch that saturated instead would change every product, so it must fail here
    w = torch.tensor([0, 127, 128, 255, 256, -1, -129, 0x12345678, -0x12345678, 2**31 - 1],
                     dtype=torch.int32)  # fmt: skip
    want = torch.tensor([((v + 128) % 256) - 128 for v in w.tolist()], dtype=torch.int8)
    assert torch.equal(w.to(torch.int8), want)
    big = w.repeat(100)  # long enough for the vectorized kernels
    dest = torch.empty(2, big.numel(), dtype=torch.int8)[:, ::1][0]
    assert torch.equal(dest.copy_(big), want.repeat(100))
    strided = torch.empty(big.numel(), 3, dtype=torch.int8)[:, 1]
    assert torch.equal(strided.copy_(big), want.repeat(100))


def test_embedding_backward_pads_and_scales_by_frequency() -> None:
    idx = torch.tensor([[2, 7, 2], [0, 2, 7]])
    grad = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3))
    with enter_strict():
        gw = torch.ops.aten.embedding_dense_backward(grad, idx, 9, 7, True)
    flat, g64 = idx.reshape(-1), grad.reshape(-1, 4).double()
    g64[flat == 7] = 0.0
    want = torch.zeros(9, 4, dtype=torch.float64).index_add_(0, flat, g64)
    counts = torch.bincount(flat[flat != 7], minlength=9).clamp_min(1)
    assert torch.equal(gw, (want / counts.double().unsqueeze(1)).to(F32))


@pytest.mark.parametrize("p", [0.0, 2.0**-25, 0.1, 0.5, 0.5 + 2.0**-26, 1 - 2.0**-25, 1.0, 2.0])
def test_bernoulli_is_the_uniform_below_p(p: float) -> None:
    # the mask compares the random bits with an integer limit; it must be u < p in float32
    with enter_strict(seed=4) as mode:
        u = mode.generator.uniform((3000,))
        mode.generator.set_state([4, 0])
        mask = torch.empty(3000).bernoulli_(p)
    assert torch.equal(mask, (u < p).to(F32))


def test_conv2d_forward_and_backward_match_float64() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 7, 6, generator=g).requires_grad_()
    w = torch.randn(4, 3, 3, 2, generator=g).requires_grad_()
    b = torch.randn(4, generator=g).requires_grad_()
    gy = torch.randn(2, 4, 4, 6, generator=g)
    with enter_strict():
        y = F.conv2d(x, w, b, stride=(2, 1), padding=(1, 1), dilation=(1, 2))
        grads = torch.autograd.grad(y, (x, w, b), gy)
    xd, wd, bd = (v.detach().double().requires_grad_() for v in (x, w, b))
    yd = F.conv2d(xd, wd, bd, stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    gds = torch.autograd.grad(yd, (xd, wd, bd), gy.double())
    assert (y.double() - yd).abs().max().item() <= 1e-6 * yd.abs().max().item()
    for ga, gb in zip(grads, gds, strict=True):
        assert (ga.double() - gb).abs().max().item() <= 1e-6 * gb.abs().max().item()


def test_addcmul_addcdiv_lerp_round_each_step() -> None:
    g = torch.Generator().manual_seed(6)
    x, t1, t2 = (torch.randn(1000, generator=g) for _ in range(3))
    with enter_strict():
        a = torch.addcmul(x, t1, t2, value=0.3)
        c = torch.addcdiv(x, t1, t2, value=-0.7)
        e = torch.lerp(x, t1, 0.9)
    assert torch.equal(a, x + (t1 * t2) * 0.3)
    assert torch.equal(c, x + (t1 / t2) * -0.7)
    assert torch.equal(e, t1 - (t1 - x) * (1 - torch.tensor(0.9)))


def test_scaled_dot_product_attention_takes_the_math_path_and_matches_float64() -> None:
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g).requires_grad_() for _ in range(3))
    gy = torch.randn(2, 3, 5, 8, generator=g)
    with enter_strict():
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        grads = torch.autograd.grad(y, (q, k, v), gy)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    yd = F.scaled_dot_product_attention(qd, kd, vd, is_causal=True)
    gds = torch.autograd.grad(yd, (qd, kd, vd), gy.double())
    assert (y.double() - yd).abs().max().item() <= 1e-6 * yd.abs().max().item()
    for ga, gb in zip(grads, gds, strict=True):
        assert (ga.double() - gb).abs().max().item() <= 1e-6 * gb.abs().max().item()


def test_foreach_ops_equal_their_per_tensor_strict_ops() -> None:
    g = torch.Generator().manual_seed(8)
    xs = [torch.randn(n, generator=g) for n in (3, 70000)]
    t1 = [torch.randn(x.shape, generator=g) for x in xs]
    t2 = [torch.rand(x.shape, generator=g) + 0.5 for x in xs]
    scalars = torch.tensor([0.25, -3.0])
    with enter_strict():
        a = torch._foreach_addcdiv([x.clone() for x in xs], t1, t2, scalars)
        b = torch._foreach_addcmul([x.clone() for x in xs], t1, t2, [0.5, 2.0])
        c = torch._foreach_lerp(xs, t1, 0.1)
        d = torch._foreach_exp(t1)
        want_a = [
            torch.addcdiv(x, u, v, value=s)
            for x, u, v, s in zip(xs, t1, t2, (0.25, -3.0), strict=True)
        ]
        want_b = [
            torch.addcmul(x, u, v, value=s)
            for x, u, v, s in zip(xs, t1, t2, (0.5, 2.0), strict=True)
        ]
        want_c = [torch.lerp(x, u, 0.1) for x, u in zip(xs, t1, strict=True)]
        want_d = [torch.exp(u) for u in t1]
    for got, want in ((a, want_a), (b, want_b), (c, want_c), (d, want_d)):
        assert all(torch.equal(p, q) for p, q in zip(got, want, strict=True))


def _big_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    a = torch.randn(300, 520, generator=g)
    b = torch.randn(520, 270, generator=g)
    x = torch.randn(1 << 20, generator=g) * torch.logspace(-3, 3, 1 << 20)
    return a, b, x


def _big_ops(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    return [
        a @ b,
        x.sum(),
        torch.softmax(a * 3, dim=-1),
        F.layer_norm(a, (520,)),
        torch.tanh(x),
        F.gelu(a),
    ]


def test_large_ops_give_the_same_bits_with_one_and_two_threads() -> None:
    """Large enough to be split across threads by default kernels (the control shows it)."""
    inputs = _big_inputs()
    before = torch.get_num_threads()
    try:
        results = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with enter_strict():
                results[threads] = _big_ops(*inputs)
            results[-threads] = [inputs[2].sum()]  # default sum, the negative control
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(p, q) for p, q in zip(results[1], results[2], strict=True))
    assert not torch.equal(results[-1][0], results[-2][0])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_weighted_nll_with_ignored_targets_matches_float64(reduction: str) -> None:
    g = torch.Generator().manual_seed(10)
    x = torch.randn(7, 5, generator=g).log_softmax(-1).requires_grad_()
    w = torch.rand(5, generator=g) + 0.5
    t = torch.tensor([0, 4, -100, 2, 2, -100, 1])
    with enter_strict():
        y = F.nll_loss(x, t, weight=w, reduction=reduction)
        (gx,) = torch.autograd.grad(y.sum(), x)
    xd = x.detach().double().requires_grad_()
    yd = F.nll_loss(xd, t, weight=w.double(), reduction=reduction)
    (gd,) = torch.autograd.grad(yd.sum(), xd)
    assert int(ulps(y, yd.to(F32)).max()) <= 1
    assert int(ulps(gx, gd.to(F32)).max()) <= 1


@pytest.mark.parametrize(("kernel", "stride"), [(2, 2), (3, 1)])
def test_max_pool_backward_adds_overlapping_gradients_exactly(kernel: int, stride: int) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 7, 6, generator=g).requires_grad_()
    with enter_strict():
        y = F.max_pool2d(x, kernel, stride)
        gy = torch.ones_like(y) * 0.125  # sums of these are exact, whatever the order
        (gx,) = torch.autograd.grad(y, x, gy)
    (want,) = torch.autograd.grad(F.max_pool2d(x, kernel, stride), x, torch.ones_like(y) * 0.125)
    assert torch.equal(gx, want)


def test_float_fallback_of_the_int8_gemm_gives_the_same_integers() -> None:
    from ree.strict._matmul import _float_mm_exact, _int_mm_exact

    g = torch.Generator().manual_seed(12)
    a = torch.randint(-128, 128, (40, 3000), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (30, 3000), dtype=torch.int8, generator=g)
    assert torch.equal(_float_mm_exact(a, b), _int_mm_exact(a, b).to(torch.int64))


def test_scatter_add_and_index_add_are_exact_whatever_the_order() -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(4, 6, generator=g)
    # mixed magnitudes that float32 sums in different orders would round differently
    src = torch.randn(4, 30, generator=g) * torch.logspace(-6, 6, 30).to(F32)
    index = torch.randint(0, 6, (4, 30), generator=g)
    with enter_strict():
        got = x.scatter_add(1, index, src)
        got_ia = x.index_add(1, index[0], src, alpha=0.5)
    want = x.double().scatter_add(1, index, src.double()).to(F32)
    want_ia = x.double().index_add(1, index[0], src.double(), alpha=0.5).to(F32)
    assert int(ulps(got, want).max()) <= 1
    assert int(ulps(got_ia, want_ia).max()) <= 1


def test_logsumexp_matches_float64() -> None:
    g = torch.Generator().manual_seed(14)
    x = torch.randn(5, 7, 9, generator=g) * 30
    with enter_strict():
        got = [torch.logsumexp(x, 1), torch.logsumexp(x, (0, 2), keepdim=True)]
    want = [torch.logsumexp(x.double(), 1), torch.logsumexp(x.double(), (0, 2), keepdim=True)]
    for a, b in zip(got, want, strict=True):
        assert int(ulps(a, b.to(F32)).max()) <= 1


@pytest.mark.parametrize("name", ["exp", "expm1"])
def test_exp_fast_path_gives_the_bits_of_the_general_path(name: str) -> None:
    """exp and expm1 skip their special-value selections on clean input: the same bits either way."""
    from ree.strict import _transcend as tr

    fn = getattr(tr, name)
    g = torch.Generator().manual_seed(5)
    x = torch.cat(
        [
            torch.rand(5000, generator=g, dtype=torch.float64) * -720.0,  # some below EXP_MIN
            torch.randn(5000, generator=g, dtype=torch.float64) * 30.0,
            torch.tensor([0.0, -0.0, tr.EXP_MIN, -1e-300, 699.9], dtype=torch.float64),
        ]
    )
    # a nan (and a value above the fast range) sends the whole call down the general path
    slow = fn(torch.cat([x, torch.tensor([math.nan, 705.0], dtype=torch.float64)]))[:-2]
    fast = fn(x)
    assert torch.equal(fast.view(torch.int64), slow.view(torch.int64))
    above = fn(x[x >= tr.EXP_MIN])
    assert torch.equal(above.view(torch.int64), slow[x >= tr.EXP_MIN].view(torch.int64))


def _grads_vs_float64(
    fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], **kw: object
) -> list[float]:
    """Strict ``fn`` and its input gradients against float64, as errors relative to each maximum."""
    g = torch.Generator().manual_seed(11)
    leaves = [t.clone().requires_grad_() for t in inputs]
    with enter_strict():
        y = fn(*leaves, **kw)
    gy = torch.randn(y.shape, generator=g)
    with enter_strict():
        grads = torch.autograd.grad(y, leaves, gy)
    ref = [t.detach().double().requires_grad_() for t in inputs]
    yd = fn(*ref, **kw)
    gds = torch.autograd.grad(yd, ref, gy.double())
    pairs = [(y, yd), *zip(grads, gds, strict=True)]
    return [((a.double() - b).abs().max() / b.abs().max()).item() for a, b in pairs]


CONVS: dict[
    str, tuple[Callable[..., torch.Tensor], tuple[int, ...], tuple[int, ...], dict[str, Any]]
] = {
    "grouped": (
        F.conv2d,
        (2, 4, 7, 6),
        (6, 2, 3, 2),
        {"stride": (2, 1), "padding": 1, "groups": 2},
    ),
    "depthwise": (F.conv2d, (2, 4, 7, 6), (8, 1, 3, 3), {"padding": 1, "groups": 4}),
    "transposed": (
        F.conv_transpose2d,
        (2, 4, 5, 4),
        (4, 3, 3, 2),
        {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
    ),
    "transposed-dilated": (
        F.conv_transpose2d,
        (2, 3, 5, 4),
        (3, 2, 3, 3),
        {"stride": (2, 3), "padding": (1, 0), "dilation": (2, 1)},
    ),
    "conv1d-grouped": (F.conv1d, (2, 4, 9), (6, 2, 3), {"stride": 2, "padding": 1, "groups": 2}),
    "conv_transpose1d": (
        F.conv_transpose1d,
        (2, 4, 9),
        (4, 3, 3),
        {"stride": 2, "padding": 1, "output_padding": 1},
    ),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_grouped_transposed_and_1d_convolutions_match_float64(name: str) -> None:
    fn, xs, ws, kw = CONVS[name]
    g = torch.Generator().manual_seed(3)
    w = torch.randn(ws, generator=g)
    out_channels = (
        w.shape[1] * int(kw.get("groups", 1)) if "transpose" in fn.__name__ else w.shape[0]
    )
    inputs = [torch.randn(xs, generator=g), w, torch.randn(out_channels, generator=g)]
    errs = _grads_vs_float64(fn, inputs, **kw)
    assert max(errs) <= 2e-7, errs


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (6, 3), (4, 3, 7)])
def test_batch_norm_matches_float64_and_updates_running_stats(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=g) * 3 + 1
    w, b = torch.rand(3, generator=g) + 0.5, torch.randn(3, generator=g)
    stats = [torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5]

    def train(xx: torch.Tensor, ww: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
        rm, rv = (s.to(xx.dtype).clone() for s in stats)
        out = F.batch_norm(xx, rm, rv, ww, bb, training=True, momentum=0.1, eps=1e-5)
        if xx.dtype == F32:  # the strict pass: keep its running stats for the check below
            train.stats = (rm, rv)  # type: ignore[attr-defined]
        return out

    def evaluate(xx: torch.Tensor, ww: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
        rm, rv = (s.to(xx.dtype).clone() for s in stats)
        return F.batch_norm(xx, rm, rv, ww, bb, training=False, eps=1e-5)

    assert max(_grads_vs_float64(train, [x, w, b])) <= 2e-7
    assert max(_grads_vs_float64(evaluate, [x, w, b])) <= 2e-7
    dims = [0, *range(2, x.dim())]
    x64 = x.double()
    want_mean = (stats[0].double() * 0.9 + x64.mean(dims) * 0.1).to(F32)
    want_var = (stats[1].double() * 0.9 + x64.var(dims, correction=1) * 0.1).to(F32)
    rm, rv = train.stats  # type: ignore[attr-defined]
    assert (rm - want_mean).abs().max().item() <= 1e-6
    assert (rv - want_var).abs().max().item() <= 1e-6 * want_var.abs().max().item()


def test_batch_norm_module_gives_the_same_bits_with_one_and_two_threads() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 4, 16, 16, generator=g)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            bn = torch.nn.BatchNorm2d(4)
            xx = x.clone().requires_grad_()
            with enter_strict():
                y = bn(xx)
                (gx,) = torch.autograd.grad((y * y).sum(), xx)
            results.append((y, gx, bn.running_mean.clone(), bn.running_var.clone()))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_and_bfloat16_arithmetic_raises_naming_the_op(dtype: torch.dtype) -> None:
    """Strict mode's dtype policy: float32 only; low-precision copies are fine, arithmetic raises."""
    from ree._errors import NondeterminismError

    x = torch.randn(4, 4)
    with enter_strict():
        low = x.to(dtype)  # a correctly rounded conversion: exact, so allowed
        assert torch.equal(low, x.to(dtype))
        assert torch.equal(low.float() * x, x.to(dtype).float() * x)
        for op, run in (
            ("mul", lambda: low * low),
            ("sqrt", lambda: torch.sqrt(low)),
            ("mm", lambda: low @ low),
            ("addmm", lambda: F.linear(low, low, low[0])),
            ("sum", lambda: low.sum()),
        ):
            with pytest.raises(NondeterminismError, match=rf"{op}.*{str(dtype)[6:]}.*float32"):
                run()
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(NondeterminismError):
            F.linear(x, x)


@pytest.mark.parametrize("k", [253, 254, 2015, 2016])
def test_int32_joined_diagonals_give_the_bits_of_the_float_engine(k: int) -> None:
    """The int8 engine joins diagonals in int32 below K = 254 and 2016: exact, so the same bits."""
    from ree.strict import strict_matmul
    from ree.strict._matmul import matmul64

    g = torch.Generator().manual_seed(k)
    # rows of equal magnitude: every slice digit is in play, near its extremes
    a = torch.randn(3, 5, k, generator=g).sign() * (1 - torch.rand(3, 5, k, generator=g) * 2**-20)
    b = torch.randn(3, k, 4, generator=g)
    batched = strict_matmul(a, b, "int8")
    assert torch.equal(batched, strict_matmul(a, b, "float"))
    assert torch.equal(strict_matmul(a[1], b[1], "int8"), batched[1])
    # the float64 value that baddbmm rounds (a path of its own on CPUs)
    assert torch.equal(matmul64(a, b, "int8")[0], matmul64(a, b, "float")[0])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_an_in_place_float_result_into_an_integer_tensor_is_refused_as_torch_does(
    dtype: torch.dtype,
) -> None:
    half = torch.tensor([0.5, 1.5, 2.5])
    with pytest.raises(RuntimeError) as plain:
        torch.ones(3, dtype=dtype).add_(half)
    x = torch.ones(3, dtype=dtype)
    with enter_strict(), pytest.raises(RuntimeError) as strict:
        x.add_(half)
    assert str(strict.value) == str(plain.value)
    assert torch.equal(x, torch.ones(3, dtype=dtype))  # nothing was written
    if dtype != torch.bool:
        with enter_strict():
            x.add_(2).mul_(3)  # an integer result is written, as torch writes it
        assert torch.equal(x, torch.full((3,), 9, dtype=dtype))
