"""Make a training DataLoader reproducible and resumable: shared by every integration.

The order comes from :class:`ree.ReproducibleSampler` (a function of seed and
epoch alone, able to start mid-epoch), randomness inside ``__getitem__`` from
:class:`ree.SeededDataset` (keyed by sample index and epoch, never by worker id),
and each iterator's worker base seed from a private generator, so starting an
iterator never draws from the training RNG. Together they keep ``num_workers``
and worker persistence out of every root (DESIGN.md, "The state schema").
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from ree._data import ReproducibleSampler, SeededDataset, worker_init_fn
from ree._errors import NondeterminismError


def reproducible_sampler(sampler: Any, dataset: Any, seed: int) -> ReproducibleSampler:
    """The REE's sampler in place of ``sampler``: kept if it is one, else an equivalent order.

    A random sampler becomes a shuffling one and a sequential sampler an in-order
    one; anything else raises :class:`ree.NondeterminismError`.
    """
    if dataset is None or isinstance(dataset, IterableDataset):
        raise NondeterminismError(
            "the training dataset is an IterableDataset (or has no length), whose order cannot "
            "be resumed by index; use a map-style Dataset"
        )
    if isinstance(sampler, ReproducibleSampler):
        return sampler
    if isinstance(sampler, RandomSampler | SequentialSampler):
        # accelerate's SeedableRandomSampler is a RandomSampler too
        if isinstance(sampler, RandomSampler) and (sampler.replacement or sampler._num_samples):
            raise NondeterminismError(
                "RandomSampler(replacement=True or num_samples=...) cannot be made resumable; "
                "use shuffle=True or ree.ReproducibleSampler"
            )
        return ReproducibleSampler(len(dataset), seed=seed, shuffle=isinstance(sampler, RandomSampler))
    raise NondeterminismError(
        f"the training sampler {type(sampler).__name__} is not reproducible; use shuffle=True/False "
        "or ree.ReproducibleSampler"
    )


def reproducible_loader(dl: Any, seed: int) -> DataLoader[Any]:
    """A copy of ``dl`` whose order and randomness are functions of ``seed``, epoch and index.

    ``loader.sampler`` of the result is its :class:`ree.ReproducibleSampler`.
    """
    if type(dl) is not DataLoader:
        raise NondeterminismError(
            f"the training data is a {type(dl).__name__}; the REE rebuilds one plain "
            "torch.utils.data.DataLoader to control the sample order: pass one"
        )
    if dl.batch_size is None or type(dl.batch_sampler) is not BatchSampler:
        raise NondeterminismError(
            f"the training loader uses a custom batch sampler ({type(dl.batch_sampler).__name__}); "
            "pass batch_size= and a sampler instead"
        )
    ours = reproducible_sampler(dl.sampler, dl.dataset, seed)
    dataset = dl.dataset if isinstance(dl.dataset, SeededDataset) else SeededDataset(dl.dataset, seed=seed)
    return DataLoader(
        dataset,
        batch_size=dl.batch_size,
        sampler=ours,
        num_workers=dl.num_workers,
        collate_fn=dl.collate_fn,
        pin_memory=dl.pin_memory,
        drop_last=dl.drop_last,
        timeout=dl.timeout,
        worker_init_fn=dl.worker_init_fn or worker_init_fn,
        multiprocessing_context=dl.multiprocessing_context,
        generator=dl.generator if dl.generator is not None else torch.Generator().manual_seed(seed),
        prefetch_factor=dl.prefetch_factor if dl.num_workers > 0 else None,
        persistent_workers=dl.persistent_workers,
        pin_memory_device=dl.pin_memory_device,
        in_order=dl.in_order,
    )
