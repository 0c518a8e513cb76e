"""Data order and per-sample seeding (ree._data): keyed by (seed, epoch, index), never by worker."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ree._data import (
    KeyedIndex,
    ReproducibleSampler,
    SeededDataset,
    permutation,
    sample_seed,
    worker_init_fn,
)
from ree._determinism import restore_determinism, snapshot_determinism
from ree._errors import ReeConfigError

U64 = st.integers(min_value=0, max_value=2**64 - 1)


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    """Put the global generators and switches back after each test."""
    snapshot = snapshot_determinism()
    yield
    restore_determinism(snapshot)


# -- an independent reimplementation of the spec in ree._data's docstring ------


def _ref_mix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return x ^ (x >> 31)


def _ref_hash(domain: bytes, seed: int, epoch: int, i: int) -> int:
    key = _ref_mix(_ref_mix(_ref_mix(int.from_bytes(domain, "big")) ^ seed) ^ epoch)
    return _ref_mix(key ^ i)


def _ref_permutation(n: int, seed: int, epoch: int) -> list[int]:
    return sorted(range(n), key=lambda i: _ref_hash(b"perm", seed, epoch, i))


# Computed once by _ref_permutation and _ref_hash above, then frozen: a change to
# the algorithm or to its reference shows up here.
FROZEN_PERMUTATIONS = [
    ((12, 0, 0), [11, 7, 6, 1, 5, 10, 8, 4, 2, 0, 9, 3]),
    ((12, 7, 3), [11, 3, 2, 6, 9, 0, 8, 1, 7, 4, 5, 10]),
    ((12, 2**64 - 1, 1), [11, 6, 7, 4, 0, 9, 10, 3, 8, 2, 1, 5]),
]
FROZEN_SAMPLE_SEEDS = [
    ((0, 0, 0), 10447302569330722794),
    ((42, 3, 17), 8838999683726973403),
]


@pytest.mark.parametrize(("args", "expected"), FROZEN_PERMUTATIONS)
def test_permutation_matches_frozen_vectors(
    args: tuple[int, int, int], expected: list[int]
) -> None:
    assert _ref_permutation(*args) == expected
    result = permutation(*args)
    assert result.dtype == np.int64
    assert result.tolist() == expected


@pytest.mark.parametrize(("args", "expected"), FROZEN_SAMPLE_SEEDS)
def test_sample_seed_matches_frozen_vectors(args: tuple[int, int, int], expected: int) -> None:
    assert _ref_hash(b"samp", *args) == expected
    assert sample_seed(*args) == expected


@given(n=st.integers(0, 200), seed=U64, epoch=U64)
def test_permutation_is_a_permutation_and_matches_the_reference(
    n: int, seed: int, epoch: int
) -> None:
    result = permutation(n, seed, epoch)
    assert sorted(result.tolist()) == list(range(n))
    assert result.tolist() == _ref_permutation(n, seed, epoch)


@given(seed=U64, epoch=U64, index=U64)
def test_sample_seed_matches_the_reference(seed: int, epoch: int, index: int) -> None:
    assert sample_seed(seed, epoch, index) == _ref_hash(b"samp", seed, epoch, index)


def test_permutation_differs_across_epochs_and_seeds() -> None:
    base = permutation(50, 0, 0).tolist()
    assert permutation(50, 0, 0).tolist() == base
    assert permutation(50, 0, 1).tolist() != base
    assert permutation(50, 1, 0).tolist() != base
    # no domain collision between the order and the sample seeds
    assert sample_seed(0, 0, 0) != _ref_hash(b"perm", 0, 0, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: permutation(-1, 0, 0),
        lambda: permutation(3, -1, 0),
        lambda: permutation(3, 0, 2**64),
        lambda: sample_seed(0, 0, -1),
        lambda: sample_seed(0, cast(Any, 1.0), 0),
        lambda: ReproducibleSampler(3, seed=-5),
        lambda: ReproducibleSampler(3).set_cursor(0, 4),
        lambda: ReproducibleSampler(3).load_state_dict({"epoch": 0, "index": 0}),
    ],
)
def test_bad_arguments_raise_config_errors(call: Any) -> None:
    with pytest.raises(ReeConfigError):
        call()


# -- KeyedIndex and the sampler ------------------------------------------------


def test_keyed_index_is_an_int_that_pickles_with_its_epoch() -> None:
    k = KeyedIndex(7, epoch=3, position=2)
    assert k == 7
    assert hash(k) == hash(7)
    assert [10, 11, 12, 13, 14, 15, 16, 17][k] == 17
    back = pickle.loads(pickle.dumps(k))
    assert isinstance(back, KeyedIndex)
    assert (int(back), back.epoch, back.position) == (7, 3, 2)
    assert repr(back) == "KeyedIndex(7, epoch=3, position=2)"


def test_sampler_yields_the_epoch_order_as_keyed_indices() -> None:
    sampler = ReproducibleSampler(list(range(20)), seed=5)
    sampler.set_epoch(2)
    items = list(sampler)
    assert len(sampler) == 20
    assert items == permutation(20, 5, 2).tolist()
    assert all(type(k) is KeyedIndex and k.epoch == 2 for k in items)
    assert [k.position for k in items] == list(range(20))
    assert list(ReproducibleSampler(6, shuffle=False)) == list(range(6))


def test_resume_mid_epoch_continues_the_uninterrupted_order() -> None:
    uninterrupted = ReproducibleSampler(17, seed=9)
    uninterrupted.set_epoch(4)
    full = list(uninterrupted)

    first = ReproducibleSampler(17, seed=9)
    first.set_epoch(4)
    head = [k for k, _ in zip(first, range(5), strict=False)]
    assert head == full[:5]

    resumed = ReproducibleSampler(17, seed=9)
    resumed.set_cursor(4, 5)
    resumed.set_epoch(4)  # Lightning sets the epoch again at its start: keep the cursor
    tail = list(resumed)
    assert head + tail == full
    assert [k.position for k in tail] == list(range(5, 17))
    assert list(resumed) == full  # the next pass starts at 0


def test_a_new_epoch_resets_the_cursor() -> None:
    sampler = ReproducibleSampler(10, seed=1)
    sampler.set_cursor(3, 6)
    sampler.set_epoch(4)
    assert list(sampler) == permutation(10, 1, 4).tolist()


def test_state_dict_is_plain_ints_and_round_trips() -> None:
    sampler = ReproducibleSampler(10, seed=11)
    sampler.set_cursor(2, 7)
    state = sampler.state_dict()
    assert state == {"seed": 11, "epoch": 2, "index": 7}
    assert all(type(v) is int for v in state.values())

    other = ReproducibleSampler(10)
    other.load_state_dict(state)
    assert list(other) == permutation(10, 11, 2).tolist()[7:]


def test_cursor_counts_from_where_the_pass_started() -> None:
    sampler = ReproducibleSampler(10, seed=2)
    sampler.set_cursor(1, 4)
    it = iter(sampler)
    next(it)
    assert sampler.cursor(consumed=3) == {"epoch": 1, "index": 7, "seed": 2}
    fresh = ReproducibleSampler(10, seed=2)
    fresh.load_state_dict(sampler.cursor(consumed=3))
    assert list(fresh) == permutation(10, 2, 1).tolist()[7:]


# -- per-sample seeding and DataLoader workers ---------------------------------


class Augmenting(Dataset[torch.Tensor]):
    """A dataset whose samples draw from torch, ``random`` and NumPy's global RNG."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(
            [float(index), torch.rand(()).item(), random.random(), float(np.random.rand())],
            dtype=torch.float64,
        )


def _rng_view() -> tuple[bytes, Any, bytes]:
    return (
        torch.get_rng_state().numpy().tobytes(),
        random.getstate(),
        cast(Any, np.random.get_state())[1].tobytes(),
    )


def test_seeded_dataset_keys_samples_by_index_and_epoch_only() -> None:
    data: SeededDataset[torch.Tensor] = SeededDataset(Augmenting(), seed=3)
    before = _rng_view()
    a = data[KeyedIndex(5, epoch=1)]
    data[KeyedIndex(2, epoch=1)]
    assert torch.equal(data[KeyedIndex(5, epoch=1)], a)
    assert _rng_view() == before  # the caller's generators are left as they were
    assert not torch.equal(data[KeyedIndex(5, epoch=2)], a)
    assert not torch.equal(SeededDataset(Augmenting(), seed=4)[KeyedIndex(5, epoch=1)], a)
    assert torch.equal(data[5], data[KeyedIndex(5, epoch=0)])
    assert len(data) == 24


def test_seeded_dataset_batches_give_the_samples_one_index_at_a_time_gives() -> None:
    data: SeededDataset[torch.Tensor] = SeededDataset(Augmenting(), seed=3)
    keys = [KeyedIndex(i, epoch=2) for i in (7, 0, 7, 23)]
    before = _rng_view()
    batch = data.__getitems__(keys)
    assert _rng_view() == before
    singles = [data[k] for k in keys]
    assert len(batch) == 4
    assert all(torch.equal(a, b) for a, b in zip(batch, singles, strict=True))
    assert torch.equal(batch[0], batch[2])
    assert not torch.equal(batch[0], batch[1])


def test_a_tensor_dataset_is_read_directly() -> None:
    inner = TensorDataset(torch.arange(6.0), torch.arange(6) * 2)
    data: SeededDataset[tuple[torch.Tensor, ...]] = SeededDataset(inner, seed=1)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    got = data.__getitems__([4, 1])
    assert torch.equal(torch.get_rng_state(), state)
    assert [(float(x), int(y)) for x, y in got] == [(4.0, 8), (1.0, 2)]
    assert float(data[3][0]) == 3.0


def test_seeded_dataset_restores_the_generators_when_the_sample_raises() -> None:
    class Broken(Dataset[int]):
        def __getitem__(self, index: int) -> int:
            torch.rand(3)
            raise KeyError(index)

    before = _rng_view()
    with pytest.raises(KeyError):
        SeededDataset(Broken())[1]
    assert _rng_view() == before


def _epochs(num_workers: int) -> tuple[list[torch.Tensor], tuple[bytes, Any, bytes]]:
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    sampler = ReproducibleSampler(24, seed=7)
    loader = DataLoader(
        SeededDataset(Augmenting(), seed=7),
        batch_size=5,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=worker_init_fn,
    )
    batches = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches += list(loader)
    return batches, _rng_view()


def test_num_workers_changes_neither_batches_nor_the_training_rng() -> None:
    batches0, rng0 = _epochs(num_workers=0)
    batches2, rng2 = _epochs(num_workers=2)
    assert len(batches0) == len(batches2) == 10
    for b0, b2 in zip(batches0, batches2, strict=True):
        assert torch.equal(b0, b2)
    assert rng0 == rng2
    # the augmentations really are random, and the epochs really differ
    assert len({float(x) for b in batches0 for x in b[:, 1]}) == 48
    assert not torch.equal(batches0[0], batches0[5])


def test_worker_init_fn_does_nothing_outside_a_worker() -> None:
    before = _rng_view()
    worker_init_fn(0)
    assert _rng_view() == before


class Unseeded(Dataset[float]):
    """Draws from the worker's global generators directly, outside SeededDataset."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> float:
        return random.random() + float(np.random.rand()) + torch.rand(()).item()


def test_worker_init_fn_keys_worker_generators_by_the_base_seed_alone() -> None:
    torch.manual_seed(0)
    loader = DataLoader(Unseeded(), batch_size=1, num_workers=2, worker_init_fn=worker_init_fn)
    # batches alternate between the two workers: 0 and 1 are each worker's first draw
    first, second, third, fourth = (float(b) for b in loader)
    assert first == second
    assert third == fourth
    assert first != third
