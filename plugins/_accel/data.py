"""The training DataLoader under Accelerate: a reproducible order, and a cursor that counts.

:func:`plugins._data.reproducible_loader` rebuilds the user's loader before ``accelerate``
prepares it: a :class:`ree.ReproducibleSampler` (an order from ``(seed, epoch)``
alone, resumable at any position), a :class:`ree.SeededDataset` (randomness keyed
by sample and epoch, never by worker), :func:`ree.worker_init_fn`, and a private
generator, so starting an iterator never draws from the training RNG.

:class:`TracedDataLoaderShard` is accelerate's ``DataLoaderShard`` with an
``__iter__`` that tells the accelerator, before each batch reaches the loop, that
the previous batch is done: that is when a pending root is taken (after the
scheduler stepped) and the data cursor moves. It shows the accelerator the batch
too: the batch leaves of a dispute's traced step are what the loader yielded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from accelerate.data_loader import DataLoaderShard

from ree._data import ReproducibleSampler
from ree._errors import NondeterminismError


class BatchObserver(Protocol):
    """What a traced loader tells as it yields: the accelerator implements it."""

    def _gensyn_before_pass(self, loader: TracedDataLoaderShard) -> None: ...

    def _gensyn_before_batch(self, loader: TracedDataLoaderShard, batch: Any) -> None: ...

    def _gensyn_after_pass(self, loader: TracedDataLoaderShard) -> None: ...


def sampler_of(loader: Any) -> ReproducibleSampler:
    """The :class:`ree.ReproducibleSampler` inside a prepared loader."""
    outer = loader.batch_sampler
    inner = getattr(outer, "batch_sampler", outer)  # BatchSamplerShard wraps it with 2+ ranks
    sampler = getattr(inner, "sampler", None)
    if not isinstance(sampler, ReproducibleSampler):
        raise NondeterminismError(
            f"the prepared training loader samples with {type(sampler).__name__}, not the REE's"
        )
    return sampler


class TracedDataLoaderShard(DataLoaderShard):  # type: ignore[misc]
    """accelerate's ``DataLoaderShard`` that reports each batch to the accelerator first."""

    _gensyn_observer: BatchObserver

    @classmethod
    def adopt(cls, shard: Any, observer: BatchObserver) -> TracedDataLoaderShard:
        """The same loader (its whole state moved over) with the reporting ``__iter__``.

        ``DataLoaderShard`` reports ``DataLoader`` as its ``__class__`` (for
        ``isinstance``) and that property cannot be assigned, so the instance is
        rebuilt from its ``__dict__`` instead.
        """
        if type(shard) is not DataLoaderShard:
            raise NondeterminismError(
                f"accelerate prepared the training loader as {type(shard).__name__}; the REE "
                "supports DataLoaderShard (leave dispatch_batches off)"
            )
        new = cls.__new__(cls)
        new.__dict__.update(shard.__dict__)
        new._gensyn_observer = observer
        return new

    def __iter__(self) -> Iterator[Any]:
        """Yield accelerate's batches, telling the accelerator before the pass and each batch."""
        self._gensyn_observer._gensyn_before_pass(self)
        for batch in super().__iter__():
            self._gensyn_observer._gensyn_before_batch(self, batch)
            yield batch
        self._gensyn_observer._gensyn_after_pass(self)
