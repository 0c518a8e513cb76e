"""Data order and data randomness keyed by (seed, epoch, sample index), never by worker.

DESIGN.md, "The state schema", what must not change the result: ``num_workers``.
Three parts make a loader's output a function of ``(seed, epoch, index)`` alone:

* :func:`permutation` and :class:`ReproducibleSampler`: the epoch's order, from
  exact integer arithmetic, resumable at any position (``data/epoch``,
  ``data/index``, ``data/seed`` of the state schema);
* :class:`KeyedIndex`: the int the sampler yields, carrying its epoch into the
  dataset, through the pickling of DataLoader worker queues;
* :class:`SeededDataset`: seeds the global RNGs from :func:`sample_seed` around
  each ``__getitem__`` and puts the previous states back, so an augmentation draws
  the same numbers in any worker, and the main process's training RNG is left as
  it was when ``num_workers=0``.

The integer hash (normative for this module; a reimplementation must match it
bit for bit). All arithmetic is on unsigned 64-bit integers, modulo 2**64::

    splitmix64(x):
        z = x + 0x9E3779B97F4A7C15
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)

    key(domain, seed, epoch) = splitmix64(splitmix64(splitmix64(domain) ^ seed) ^ epoch)
    hash(domain, seed, epoch, i) = splitmix64(key(domain, seed, epoch) ^ i)

with ``domain`` = ``PERMUTATION_DOMAIN`` (0x7065726D, ASCII "perm") for the data
order and ``SAMPLE_DOMAIN`` (0x73616D70, "samp") for per-sample seeds, so the two
never share values. ``splitmix64`` is a bijection of the 64-bit integers, so for
one key the n values ``hash(..., i)`` are distinct and the sort below has no ties.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence, Sized
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, TensorDataset, get_worker_info

from ree._determinism import check_seed, numpy_seed
from ree._errors import ReeConfigError

T_co = TypeVar("T_co", covariant=True)

MASK64 = (1 << 64) - 1
PERMUTATION_DOMAIN = 0x7065726D  # "perm"
SAMPLE_DOMAIN = 0x73616D70  # "samp"
WORKER_DOMAIN = 0x776F726B  # "work"

_GAMMA = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


# -- the integer hash ---------------------------------------------------------


def splitmix64(x: int) -> int:
    """One step of the splitmix64 finaliser on a Python int in [0, 2**64)."""
    z = (x + _GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & MASK64
    return z ^ (z >> 31)


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    # uint64 arrays wrap modulo 2**64 silently, which is the arithmetic wanted
    # (numpy warns on scalar overflow only, and every operand here is an array).
    z = x + np.uint64(_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MUL1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MUL2)
    return z ^ (z >> np.uint64(31))


def _key(domain: int, seed: int, epoch: int) -> int:
    return splitmix64(splitmix64(splitmix64(domain) ^ seed) ^ epoch)


def _check_u64(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ReeConfigError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if not 0 <= value <= MASK64:
        raise ReeConfigError(f"{name} must be in [0, 2**64), got {value!r}")
    return value


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 64-bit seed of sample ``index`` in ``epoch``: ``hash(SAMPLE_DOMAIN, ...)``.

    It depends on nothing else: not on the worker, the batch, or the order.
    """
    seed, epoch, index = (
        check_seed(seed),
        _check_u64("epoch", epoch),
        _check_u64("index", index),
    )
    return splitmix64(_key(SAMPLE_DOMAIN, seed, epoch) ^ index)


def permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The data order of ``epoch``: a permutation of ``range(n)`` as int64.

    Position ``p`` holds the index with the ``p``-th smallest value of
    ``hash(PERMUTATION_DOMAIN, seed, epoch, i)`` over ``i`` in ``range(n)`` (see
    the module docstring). Only exact integer operations are used, so the order
    is the same on every platform and with every version of torch and NumPy.
    """
    n = _check_u64("n", n)
    seed, epoch = check_seed(seed), _check_u64("epoch", epoch)
    key = np.uint64(_key(PERMUTATION_DOMAIN, seed, epoch))
    values = _splitmix64_array(np.arange(n, dtype=np.uint64) ^ key)
    return np.argsort(values, kind="stable").astype(np.int64, copy=False)


# -- the sampler --------------------------------------------------------------


class KeyedIndex(int):
    """A sample index that carries its epoch and its position in the epoch's order.

    It is an ``int`` (datasets index with it as usual) and pickles with its
    attributes, so it reaches DataLoader workers intact. :class:`SeededDataset`
    reads ``epoch`` from it.
    """

    epoch: int
    position: int

    def __new__(cls, index: int, epoch: int = 0, position: int = 0) -> KeyedIndex:
        """An ``int`` equal to ``index``, tagged with ``epoch`` and ``position``."""
        self = super().__new__(cls, index)
        self.epoch = int(epoch)
        self.position = int(position)
        return self

    def __reduce__(self) -> tuple[type[KeyedIndex], tuple[int, int, int]]:
        """Pickle as ``KeyedIndex(index, epoch, position)``: int's default drops them."""
        return (KeyedIndex, (int(self), self.epoch, self.position))

    def __repr__(self) -> str:
        """Show the index with its epoch and position."""
        return f"KeyedIndex({int(self)}, epoch={self.epoch}, position={self.position})"


class ReproducibleSampler(Sampler[int]):
    """A seeded sampler whose order is :func:`permutation`, resumable mid-epoch.

    ``len`` is the epoch's length. Lightning calls :meth:`set_epoch` at each epoch
    start; a new epoch starts at position 0, while setting the current epoch again
    keeps a cursor set by :meth:`set_cursor` or :meth:`load_state_dict`. The
    iteration after a cursor was set starts there (and yields ``len - index``
    items); later iterations start at 0. Iterating draws nothing from any RNG.
    """

    def __init__(self, data_source: Sized | int, *, seed: int = 0, shuffle: bool = True) -> None:
        """Sample ``range(len(data_source))``, or ``range(data_source)`` given an int."""
        super().__init__()
        n = data_source if isinstance(data_source, int) else len(data_source)
        self._n = _check_u64("the number of samples", n)
        self.seed = check_seed(seed)
        self.shuffle = bool(shuffle)
        self._epoch = 0
        self._next_start = 0  # where the next __iter__ starts
        self._pass_start = 0  # where the latest (or next) pass started

    @property
    def epoch(self) -> int:
        """The epoch whose order the sampler yields."""
        return self._epoch

    def __len__(self) -> int:
        """The number of samples in one epoch."""
        return self._n

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The full order of ``epoch`` (default: the current one) as int64 indices."""
        epoch = self._epoch if epoch is None else _check_u64("epoch", epoch)
        if not self.shuffle:
            return np.arange(self._n, dtype=np.int64)
        return permutation(self._n, self.seed, epoch)

    def __iter__(self) -> Iterator[KeyedIndex]:
        """Yield the epoch's indices as :class:`KeyedIndex`, from the cursor on."""
        start, epoch = self._next_start, self._epoch
        self._pass_start, self._next_start = start, 0
        order = self.order(epoch)
        # tolist() gives Python ints once, rather than a numpy scalar per item.
        for position, index in enumerate(order[start:].tolist(), start):
            yield KeyedIndex(index, epoch, position)

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``'s order. A new epoch resets the cursor to position 0."""
        epoch = _check_u64("epoch", epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._next_start = self._pass_start = 0

    def set_cursor(self, epoch: int, index: int) -> None:
        """Resume: the next iteration yields ``epoch``'s order from position ``index``."""
        epoch, index = _check_u64("epoch", epoch), _check_u64("index", index)
        if index > self._n:
            raise ReeConfigError(
                f"data cursor index {index} is past the end of an epoch of {self._n} samples"
            )
        self._epoch = epoch
        self._next_start = self._pass_start = index

    def cursor(self, consumed: int = 0) -> dict[str, int]:
        """The state schema's data cursor once ``consumed`` samples of this pass trained.

        Returns ``{"epoch", "index", "seed"}`` (the ``data/*`` leaves). The count
        must come from the training loop: with DataLoader workers, the sampler's
        own iterator runs ahead of training by the prefetched batches.
        """
        consumed = _check_u64("consumed", consumed)
        return {"epoch": self._epoch, "index": self._pass_start + consumed, "seed": self.seed}

    def state_dict(self) -> dict[str, int]:
        """The sampler's resume setting as plain ints: ``{"seed", "epoch", "index"}``.

        ``index`` is where the next iteration starts; it is not a count of samples
        trained on (see :meth:`cursor`).
        """
        return {"seed": self.seed, "epoch": self._epoch, "index": self._next_start}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` or a :meth:`cursor`: seed, then epoch and index."""
        missing = {"seed", "epoch", "index"} - set(state)
        if missing:
            raise ReeConfigError(
                f"sampler state lacks {sorted(missing)}; it needs 'seed', 'epoch' and 'index', "
                f"got {dict(state)!r}"
            )
        self.seed = check_seed(state["seed"])
        self.set_cursor(state["epoch"], state["index"])


# -- per-sample seeding -------------------------------------------------------


class SeededDataset(Dataset[T_co], Generic[T_co]):
    """Wraps a dataset so each sample's randomness comes from ``(seed, epoch, index)``.

    Around the inner ``__getitem__`` it seeds torch's CPU default generator, Python
    ``random`` and NumPy's global RNG from :func:`sample_seed`, then restores their
    previous states. Augmentations that draw from those generators give the same
    sample in the main process and in any worker, and with ``num_workers=0`` the
    training RNG stream is untouched. The epoch comes from a :class:`KeyedIndex`
    (0 for a plain int). Randomness outside ``__getitem__`` (a ``collate_fn``, a
    private ``np.random.default_rng()`` or a CUDA generator) is not covered.
    """

    def __init__(self, dataset: Dataset[T_co], *, seed: int = 0) -> None:
        """Wrap ``dataset``; ``seed`` is the task's data seed (``data/seed``)."""
        self.dataset = dataset
        self.seed = check_seed(seed)

    def __len__(self) -> int:
        """The wrapped dataset's length."""
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> T_co:
        """The inner dataset's sample ``index``, drawn under its own seed."""
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[T_co]:
        """Samples ``indices`` (a DataLoader's batch), each drawn under its own seed.

        The generators' states are saved and put back once per batch, not once
        per sample (NumPy's ``get_state``/``set_state`` alone cost ~200 us). A
        plain ``TensorDataset`` draws no randomness and is read directly.
        """
        if type(self.dataset) is TensorDataset:
            return [self.dataset[int(i)] for i in indices]
        saved = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        try:
            out = []
            for index in indices:
                seed = sample_seed(self.seed, getattr(index, "epoch", 0), int(index))
                # the CPU generator only: torch.manual_seed would also reseed every
                # CUDA device, whose state this wrapper does not put back.
                torch.default_generator.manual_seed(seed)
                random.seed(seed)
                np.random.seed(numpy_seed(seed))
                out.append(self.dataset[int(index)])
            return out
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


def worker_init_fn(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn`` that makes the worker id irrelevant.

    Per-sample seeding (:class:`SeededDataset`) already makes every sample
    independent of the worker that loads it. This seeds the worker's global
    generators (torch CPU, ``random``, NumPy) from the loader's base seed alone,
    the same in every worker, so nothing else in a worker is keyed by its id.
    Passing it also keeps Lightning's ``seed_everything(workers=True)`` from
    installing its own, which keys by worker id and rank. Outside a worker it does
    nothing.
    """
    info = get_worker_info()
    if info is None:
        return
    # torch seeds worker k with base_seed + k; the base seed is shared by all.
    base = (info.seed - info.id) & MASK64
    seed = splitmix64(_key(WORKER_DOMAIN, base, 0))
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(numpy_seed(seed))
