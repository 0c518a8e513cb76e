"""One Lightning optimizer step as a window for an operator tracer: its data and its logging.

DESIGN.md, "A dispute (Verde)", level 3: an operator tracer needs every input
tensor of the step by name when it starts, but with gradient accumulation
Lightning fetches micro-batch ``m + 1`` only after micro-batch ``m`` ran, and
fetching inside the traced step would record the DataLoader's collation as the
step's ops (reading the dataset, which is neither state nor batch). So at the
step's first micro-batch the remaining ones are pulled from the fit loop's
iterator ahead of time and handed back, in order, as Lightning asks for them:
the data, its order and Lightning's counters are those of an ordinary run.

``self.log`` inside the step is Lightning's bookkeeping, not the step's
computation: at a key's first log its result collection deep-copies a tensor
(an op whose argument is a storage, which no trace can encode), and the logged
values never reach the state. In
the window it runs below every dispatch mode (:func:`log_outside_modes`), so
neither the tracer nor an adversary's op counter sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_leaves

__all__ = ["fetch_ahead", "log_outside_modes", "step_tensors"]


class _Ahead(Iterator[Any]):
    """The fit loop's iterator with ``items`` already pulled from it: those first, then the rest."""

    def __init__(self, items: list[Any], rest: Iterator[Any]) -> None:
        self.items, self.rest = items, rest

    def __next__(self) -> Any:
        if self.items:
            return self.items.pop(0)
        return next(self.rest)


def _later_micro_batches(trainer: Any) -> int:
    """How many more micro-batches the step that starts with the current batch consumes."""
    loop = trainer.fit_loop.epoch_loop
    acc = int(trainer.accumulate_grad_batches)
    ready = int(loop.batch_progress.current.ready)  # counts the current batch already
    more = (-ready) % acc
    left = trainer.num_training_batches
    if isinstance(left, int):  # Lightning steps on an epoch's last batch, whatever accumulation
        more = min(more, max(left - ready, 0))
    return more


def fetch_ahead(trainer: Any) -> list[Any]:
    """The raw batches of the current step's later micro-batches, pulled from the fit loop now.

    They go back to the fit loop's data fetcher, which hands them out in order as
    Lightning asks (its precision conversion and device transfer still run then).
    Returns ``[]`` without accumulation, or with a fetcher that is not an
    iterator over batches (``training_step`` taking ``dataloader_iter``).
    """
    more = _later_micro_batches(trainer)
    fetcher = trainer.fit_loop._data_fetcher
    if not more or fetcher is None or type(fetcher).__name__ == "_DataLoaderIterDataFetcher":
        return []
    rest = fetcher.iterator
    items: list[Any] = []
    for _ in range(more):
        try:
            items.append(next(rest))
        except StopIteration:
            break
    fetcher.iterator = _Ahead(list(items), rest)
    return [item[0] for item in items]  # CombinedLoader yields (batch, batch_idx, dataloader_idx)


def step_tensors(batch: Any) -> tuple[torch.Tensor, ...]:
    """The tensors of one micro-batch in a fixed order (tuples, lists and dicts, nested)."""
    return tuple(t for t in tree_leaves(batch) if isinstance(t, torch.Tensor))


@contextmanager
def log_outside_modes(module: Any) -> Iterator[None]:
    """While open, ``module.log`` (and so ``log_dict``) runs with no dispatch mode active."""
    bound: Callable[..., Any] = module.log

    def log(*args: Any, **kwargs: Any) -> Any:
        with _disable_current_modes():
            return bound(*args, **kwargs)

    own = vars(module).get("log")  # an instance attribute of the user's, kept
    module.log = log
    try:
        yield
    finally:
        if own is None:
            del module.log  # the class's method again
        else:
            module.log = own
