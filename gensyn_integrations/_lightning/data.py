"""Make a training DataLoader reproducible and resumable.

The loader is rebuilt around :class:`ree.ReproducibleSampler` (an order that is
a function of seed and epoch alone, and that can start mid-epoch) and
:class:`ree.SeededDataset` (randomness keyed by sample index and epoch, never by
worker id), so ``num_workers`` never changes a root.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.sampler import BatchSampler

from ree._data import ReproducibleSampler, SeededDataset
from ree._errors import NondeterminismError


def reproducible_loader(dl: Any, seed: int) -> tuple[DataLoader[Any], ReproducibleSampler]:
    """A copy of ``dl`` whose order and randomness are functions of ``seed``, epoch and index."""
    if not isinstance(dl, DataLoader):
        raise NondeterminismError(
            f"the training data is a {type(dl).__name__}; GensynTraceCallback needs one "
            "torch DataLoader to control the sample order. Return a single DataLoader from "
            "train_dataloader()"
        )
    if type(dl) is not DataLoader:
        raise NondeterminismError(
            f"the training loader is a {type(dl).__name__}, a DataLoader subclass that cannot be "
            "rebuilt safely; use torch.utils.data.DataLoader"
        )
    if isinstance(dl.dataset, IterableDataset):
        raise NondeterminismError(
            "the training dataset is an IterableDataset, whose order cannot be resumed by index; "
            "use a map-style Dataset"
        )
    if dl.batch_size is None or type(dl.batch_sampler) is not BatchSampler:
        raise NondeterminismError(
            f"the training loader uses a custom batch sampler ({type(dl.batch_sampler).__name__}); "
            "pass batch_size= and a sampler instead"
        )
    sampler = dl.sampler
    if isinstance(sampler, ReproducibleSampler):
        ours = sampler
    elif isinstance(sampler, RandomSampler | SequentialSampler):
        if isinstance(sampler, RandomSampler) and (sampler.replacement or sampler._num_samples):
            raise NondeterminismError(
                "RandomSampler(replacement=True or num_samples=...) cannot be made resumable; "
                "use shuffle=True or ree.ReproducibleSampler"
            )
        ours = ReproducibleSampler(
            len(dl.dataset),
            seed=seed,  # type: ignore[arg-type]
            shuffle=isinstance(sampler, RandomSampler),
        )
    else:
        raise NondeterminismError(
            f"the training sampler {type(sampler).__name__} is not reproducible; use shuffle=True/False "
            "or ree.ReproducibleSampler"
        )
    dataset = (
        dl.dataset
        if isinstance(dl.dataset, SeededDataset)
        else SeededDataset(dl.dataset, seed=seed)
    )
    new = DataLoader(
        dataset,
        batch_size=dl.batch_size,
        sampler=ours,
        num_workers=dl.num_workers,
        collate_fn=dl.collate_fn,
        pin_memory=dl.pin_memory,
        drop_last=dl.drop_last,
        timeout=dl.timeout,
        worker_init_fn=dl.worker_init_fn,
        multiprocessing_context=dl.multiprocessing_context,
        # The DataLoader draws each iterator's worker base seed from this generator; a
        # private one keeps the training RNG stream the same whether workers persist or not.
        generator=dl.generator if dl.generator is not None else torch.Generator().manual_seed(seed),
        prefetch_factor=dl.prefetch_factor if dl.num_workers > 0 else None,
        persistent_workers=dl.persistent_workers,
        pin_memory_device=dl.pin_memory_device,
        in_order=dl.in_order,
    )
    return new, ours
