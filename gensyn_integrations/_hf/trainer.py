"""``GensynTrainer``: a ``transformers.Trainer`` whose training runs under the REE.

Why a subclass at all, when :class:`GensynCallback` alone works with a plain
``Trainer`` (it swaps the sampler of the prepared loader in place): a callback
never sees the ``resume_from_checkpoint`` argument, nor can it choose the sampler
before the Trainer builds its loader. The subclass does both, through the
Trainer's own override points (``_get_train_sampler``, ``train``), and adds the
callback when the user did not. It is also where the client role will live
(DESIGN.md, "Framework submodules": ``train()`` sent to the network), so a
script written against it runs unchanged on the client and on a solver.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from gensyn_integrations._hf.callback import GensynCallback
from gensyn_integrations._hf.settings import check_role
from ree._data import ReproducibleSampler


class GensynTrainer(Trainer):  # type: ignore[misc]
    """A ``Trainer`` that records its trace under the REE (executor role; client role later)."""

    def __init__(
        self,
        *args: Any,
        role: str = "executor",
        commit_interval: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the Trainer, adding ``GensynCallback(commit_interval=...)`` unless one is given."""
        self.role = check_role(role, "GensynTrainer(role=...)")
        super().__init__(*args, **kwargs)
        if self.gensyn_callback is None:
            self.add_callback(GensynCallback(commit_interval=commit_interval))

    @property
    def gensyn_callback(self) -> GensynCallback | None:
        """The run's :class:`GensynCallback`: its ``trace`` holds the roots."""
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, GensynCallback):
                return cb
        return None

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[Any] | None:
        """The REE's sampler: an order that is a function of (data seed, epoch) alone."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if dataset is None or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        cb = self.gensyn_callback
        seed = self.args.seed if cb is None or cb.seed is None else cb.seed
        if self.args.data_seed is not None:
            seed = self.args.data_seed
        return ReproducibleSampler(len(dataset), seed=int(seed), shuffle=True)

    def train(
        self,
        resume_from_checkpoint: str | bool | os.PathLike[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Train here under the REE; a resumed run continues the checkpoint's trace."""
        path: str | os.PathLike[str] | None
        if resume_from_checkpoint is True:
            path = get_last_checkpoint(self.args.output_dir)
            if path is None:
                raise ValueError(f"no checkpoint found in output_dir {self.args.output_dir!r}")
        elif resume_from_checkpoint is False:
            path = None
        else:
            path = resume_from_checkpoint
        cb = self.gensyn_callback
        if cb is not None and path is not None:
            cb.resume_from = Path(path)
        return super().train(str(path) if path is not None else None, *args, **kwargs)
