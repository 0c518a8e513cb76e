"""The mode itself: refusals name the op, nothing falls back, the generator is counter-based."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ree
from ree._errors import NondeterminismError, ReeConfigError
from ree.strict import StrictGenerator, current_mode, enter_strict, supported_ops, threefry2x32

# ops whose default results depend on the device, the ISA or the order of a reduction
REFUSED = {
    "cumsum": lambda x: torch.cumsum(x, 0),
    "prod": lambda x: torch.prod(x),
    "exponential_": lambda x: torch.empty(3).exponential_(),
    "atan2": lambda x: torch.atan2(x, x),
    "atan": lambda x: torch.atan(x),
    "logcumsumexp": lambda x: torch.logcumsumexp(x, 0),
    "index_put accumulate": lambda x: torch.zeros(2).index_put_(
        (torch.tensor([0, 0, 1]),), x, accumulate=True
    ),
    "bf16 matmul": lambda x: x.bfloat16().unsqueeze(0) @ x.bfloat16().unsqueeze(1),
    "float floor division": lambda x: torch.div(x, 3.0, rounding_mode="floor"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_ops_raise_naming_the_op(name: str) -> None:
    x = torch.tensor([1.0, 2.0, 3.0])
    with enter_strict(), pytest.raises(NondeterminismError) as info:
        REFUSED[name](x)
    message = str(info.value)
    assert "strict" in message
    if name in ("cumsum", "prod", "atan2", "atan", "exponential_"):
        assert name in message


def test_a_torch_generator_is_refused_for_dropout_draws() -> None:
    with enter_strict(), pytest.raises(NondeterminismError, match="generator"):
        torch.empty(4).bernoulli_(0.5, generator=torch.Generator())


def test_exact_ops_run_natively_and_integer_sums_are_allowed() -> None:
    x = torch.arange(6).reshape(2, 3)
    with enter_strict():
        assert x.sum().item() == 15
        assert torch.equal(x.t().contiguous().flip(0)[0], torch.tensor([2, 5]))
        assert torch.equal(torch.where(x > 2, x, -x), torch.tensor([[0, -1, -2], [3, 4, 5]]))


def test_add_with_alpha_rounds_twice_not_fused() -> None:
    a = torch.tensor([1.0])
    b = torch.tensor([1.0 + 2.0**-23])
    alpha = 1.0 + 2.0**-23
    with enter_strict():
        got = torch.add(a, b, alpha=alpha)
    assert torch.equal(got, a + b * alpha)


def test_current_mode_tracks_nesting() -> None:
    assert current_mode() is None
    with enter_strict(7) as outer:
        assert current_mode() is outer
        with enter_strict(8) as inner:
            assert current_mode() is inner
        assert current_mode() is outer
    assert current_mode() is None


def test_supported_ops_lists_swapped_and_allowed_ops() -> None:
    names = supported_ops()
    assert "aten.mm.default" in names
    assert "aten.view.*" in names
    assert not any(n.startswith("aten.cumsum") for n in names)


# Random123's known-answer vectors for threefry2x32 with 20 rounds
@pytest.mark.parametrize(
    ("ctr", "key", "want"),
    [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_threefry_known_answers(
    ctr: tuple[int, int], key: tuple[int, int], want: tuple[int, int]
) -> None:
    c0, c1 = (torch.tensor([v], dtype=torch.int64) for v in ctr)
    x0, x1 = threefry2x32(c0, c1, *key)
    assert (x0.item(), x1.item()) == want


def test_generator_is_counter_based_and_resumable() -> None:
    g = StrictGenerator(42)
    first = g.bits(10)
    assert g.state() == [42, 10]
    rest = g.bits(5)
    h = StrictGenerator(42)
    h.set_state([42, 10])
    assert torch.equal(h.bits(5), rest)
    assert torch.equal(StrictGenerator(42).bits(15), torch.cat([first, rest]))
    u = StrictGenerator(1).uniform((1000,))
    assert u.dtype == torch.float32
    assert u.min().item() >= 0
    assert u.max().item() < 1
    assert torch.equal(u * 2**24, (u * 2**24).round())  # exactly on the 2**-24 grid


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, True])
def test_generator_rejects_bad_seeds(bad: object) -> None:
    with pytest.raises(ReeConfigError):
        StrictGenerator(bad)  # type: ignore[arg-type]


def test_dropout_draws_from_the_strict_generator_and_its_state_is_the_rng_leaf() -> None:
    x = torch.ones(1000)
    with enter_strict(3) as mode:
        a = F.dropout(x, 0.25)
        state = mode.generator.state()
    with enter_strict(3):
        b = F.dropout(x, 0.25)
    assert torch.equal(a, b)
    assert 0.15 < (a == 0).float().mean().item() < 0.35
    assert state == [3, 1000]
    tree = ree.capture_state(torch.nn.Linear(1, 1), step=1, mode="strict", ree_rng=state)
    assert tree.leaves["rng/ree"] == [3, 1000]


def test_round_with_decimals_is_refused_but_plain_round_runs() -> None:
    x = torch.tensor([1.25, 2.5])
    with enter_strict():
        assert torch.equal(torch.round(x), torch.tensor([1.0, 2.0]))
        with pytest.raises(NondeterminismError, match="round"):
            torch.round(x, decimals=1)


def test_normal_draws_are_standard_normal_and_keyed_by_seed() -> None:
    with enter_strict(11):
        z = torch.randn(200_000)
        w = torch.empty(4, 5).normal_(3.0, 0.5)
    with enter_strict(11):
        again = torch.randn(200_000)
    assert torch.equal(z, again)
    assert abs(z.mean().item()) < 0.01
    assert abs(z.std().item() - 1) < 0.01
    assert 0.67 < (z.abs() < 1).float().mean().item() < 0.695
    assert 2.0 < w.mean().item() < 4.0


def test_torch_initialisers_run_under_strict_mode() -> None:
    """Model construction (kaiming_uniform_, normal_) draws from the strict generator."""
    weights = []
    for seed in (5, 5, 6):
        with enter_strict(seed):
            model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_fused_dropout_gives_the_bits_of_cpu_dropout() -> None:
    """CUDA runs dropout as one native_dropout op, CPU as three ops: both must agree."""
    x = torch.randn(64, 33, generator=torch.Generator().manual_seed(4)).requires_grad_()
    gy = torch.ones(64, 33) * 0.5
    results = []
    for fused in (False, True):
        with enter_strict(9) as mode:
            if fused:
                y, _ = torch.ops.aten.native_dropout(x, 0.3, True)
            else:
                y = F.dropout(x, 0.3)
            (gx,) = torch.autograd.grad(y, x, gy)
            results.append((y, gx, mode.generator.state()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]
