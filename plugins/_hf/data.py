"""Make the Trainer's training order reproducible and resumable, in place.

The Trainer builds and prepares its own DataLoader (``accelerate`` wraps it in a
``DataLoaderShard``, and in a ``BatchSamplerShard`` with several ranks). Every
layer reads ``batch_sampler.sampler`` afresh at each pass, so swapping that one
attribute for a :class:`ree.ReproducibleSampler` makes the order a function of
``(seed, epoch)`` alone (DESIGN.md, "The state schema": ``data/*``). The
Trainer's own resume (``skip_first_batches``) skips whole batches of that order,
so a resumed run sees the same samples as an uninterrupted one.

The loader also gets a private generator: without one, each new iterator draws
its worker base seed from the global torch RNG, so a resumed run (which starts
its iterator at another moment) would draw the training RNG differently.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import BatchSampler

from plugins._data import reproducible_sampler
from ree._data import ReproducibleSampler
from ree._errors import NondeterminismError


def _batch_sampler(loader: Any) -> BatchSampler:
    outer = getattr(loader, "batch_sampler", None)
    # accelerate's BatchSamplerShard (several ranks) wraps the real one; SkipBatchSampler too
    inner = getattr(outer, "batch_sampler", outer)
    if type(inner) is not BatchSampler:
        raise NondeterminismError(
            f"the training loader batches with {type(inner).__name__}, which the REE cannot make "
            "reproducible; leave train_sampling_strategy at its default ('random')"
        )
    return inner


def install_reproducible_sampler(loader: Any, seed: int) -> ReproducibleSampler:
    """Give the prepared training ``loader`` a :class:`ree.ReproducibleSampler`; return it.

    A ``ReproducibleSampler`` already in place (``GensynTrainer`` puts one there)
    is kept. A random or sequential sampler is replaced by a shuffling or an
    in-order one; any other sampler raises :class:`ree.NondeterminismError`.
    """
    batches = _batch_sampler(loader)
    ours = reproducible_sampler(batches.sampler, getattr(loader, "dataset", None), seed)
    batches.sampler = ours
    base = getattr(loader, "base_dataloader", loader)
    if base.generator is None:
        base.generator = torch.Generator().manual_seed(seed)
    return ours
