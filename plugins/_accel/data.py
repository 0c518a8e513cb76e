"""The training DataLoader under Accelerate: a reproducible order, and a cursor that counts.

:func:`plugins._data.reproducible_loader` rebuilds the user's loader before ``accelerate``
prepares it: a :class:`ree.ReproducibleSampler` (an order from ``(seed, epoch)``
alone, resumable at any position), a :class:`ree.SeededDataset` (randomness keyed
by sample and epoch, never by worker), :func:`ree.worker_init_fn`, and a private
generator, so starting an iterator never draws from the training RNG.

:class:`TracedDataLoaderShard` is accelerate's ``DataLoaderShard`` with an
``__iter__`` that tells the accelerator, before each batch reaches the loop,
that the previous batch is done: that is when a pending root is taken (after the
scheduler stepped) and the data cursor moves. It shows the accelerator the batch
too: the batch leaves of a dispute's traced step are what the loader yielded.
It also tells when the loop asks for another batch, before accelerate's
iterator reads one from the dataset (no op of a traced step's), and when the
loop leaves a pass part way (the iterator is closed: an exception in the loop's
body, a ``break``).

A traced step of several micro-batches (gradient accumulation) needs all of them
by name when it starts, but accelerate's ``DataLoaderShard`` yields one batch at
a time (reading the next one ahead, to know when it yields the last). So
:meth:`TracedDataLoaderShard.fetch_ahead`, at the step's first micro-batch, pulls
its later ones from accelerate's own iterator and keeps them; the pass then hands
them to the loop in order, each with the loader state it was yielded with
(``end_of_dataloader``, which ``accelerator.accumulate`` and ``GradientState``
read, and a stateful loader's ``dl_state_dict``). Between, that state is put back
to the current batch's: the loop, accelerate's counters and the data order are
those of a run that fetched nothing ahead. Fetching stops at the pass's last
batch: going past it would end the pass (``iteration``, ``GradientState``) early.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

from accelerate.data_loader import DataLoaderShard

from ree._data import ReproducibleSampler
from ree._errors import NondeterminismError


class BatchObserver(Protocol):
    """What a traced loader tells as it yields: the accelerator implements it."""

    def _gensyn_before_pass(self, loader: TracedDataLoaderShard) -> None: ...

    def _gensyn_before_batch(self, loader: TracedDataLoaderShard, batch: Any) -> None: ...

    def _gensyn_before_next(self, loader: TracedDataLoaderShard) -> None: ...

    def _gensyn_left_pass(self, loader: TracedDataLoaderShard) -> None: ...

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


# what accelerate's iterator sets on the loader as it yields a batch (DataLoaderShard.__iter__)
_YIELD_STATE = ("end_of_dataloader", "dl_state_dict")
_END = object()


class _Pass(Iterator[Any]):
    """One pass of accelerate's iterator, with batches already fetched ahead handed out first."""

    def __init__(self, loader: TracedDataLoaderShard, inner: Iterator[Any]) -> None:
        self.loader, self.inner = loader, inner
        self.ahead: deque[tuple[Any, dict[str, Any]]] = deque()  # (batch, its yield state)

    def __next__(self) -> Any:
        if self.ahead:
            batch, state = self.ahead.popleft()
            self.loader.__dict__.update(state)
            return batch
        return next(self.inner)

    def fetch(self, n: int) -> list[Any]:
        """Up to ``n`` batches after the current one, stopping at the pass's last; the state stays."""
        loader = self.loader
        now = _yield_state(loader)
        got: list[Any] = []
        try:
            while len(got) < n and not loader.end_of_dataloader:
                batch = next(self.inner, _END)
                if batch is _END:
                    break
                self.ahead.append((batch, _yield_state(loader)))
                got.append(batch)
        finally:
            loader.__dict__.update(now)
        return got


def _yield_state(loader: Any) -> dict[str, Any]:
    return {k: loader.__dict__[k] for k in _YIELD_STATE if k in loader.__dict__}


class TracedDataLoaderShard(DataLoaderShard):  # type: ignore[misc]
    """accelerate's ``DataLoaderShard`` that reports each batch to the accelerator first."""

    _gensyn_observer: BatchObserver
    _gensyn_pass: _Pass | None = None

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
        one = _Pass(self, super().__iter__())
        for batch in one:
            self._gensyn_pass = one  # the pass whose batch the loop gets now
            self._gensyn_observer._gensyn_before_batch(self, batch)
            try:
                yield batch
            except GeneratorExit:  # the loop left the pass: an exception in its body, a break
                if self._gensyn_pass is one:  # not an older pass collected late
                    self._gensyn_observer._gensyn_left_pass(self)
                raise
            # the loop asks for another batch: accelerate's iterator may read one from the dataset
            self._gensyn_observer._gensyn_before_next(self)
        self._gensyn_observer._gensyn_after_pass(self)

    def fetch_ahead(self, n: int) -> list[Any]:
        """The next ``n`` batches of this pass (fewer at its end), fetched now, yielded later in order.

        Call it while the loop holds a batch of this pass (from the observer's
        ``_gensyn_before_batch``); the loader's state stays that batch's until
        the fetched ones are yielded (the module docstring).
        """
        one = self._gensyn_pass
        if one is None or n <= 0:
            return []
        return one.fetch(n)
