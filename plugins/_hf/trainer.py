"""``ExecutorTrainer``: a ``transformers.Trainer`` whose training runs under the REE.

This is ``GensynTrainer``'s executor role, the part a solver runs
(:mod:`plugins.hf_executor`); ``gensyn_integrations.transformers.GensynTrainer``
subclasses it and adds the client role, which sends ``train()`` to the network
and so belongs to the face (DESIGN.md, "Layers").

Why a subclass of ``Trainer`` at all, when :class:`GensynCallback` alone works
with a plain ``Trainer`` (it swaps the sampler of the prepared loader in place):
a callback never sees the ``resume_from_checkpoint`` argument, nor can it choose
the sampler before the Trainer builds its loader. The subclass does both,
through the Trainer's own override points (``_get_train_sampler``, ``train``),
and adds the callback when the user did not.

``train(resume_from_checkpoint=...)`` also takes a bare REE checkpoint file
(``*.safetensors``): the form that crosses machines (:mod:`plugins._hf.resume`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from gensyn_integrations.errors import ConfigError
from plugins._hf.callback import GensynCallback
from plugins._hf.resume import has_weights, is_ree_file, resume_folder
from plugins._hf.settings import REE_FILE, check_role
from ree._data import ReproducibleSampler, SeededDataset


class ExecutorTrainer(Trainer):  # type: ignore[misc]
    """A ``Trainer`` that trains here under the REE and records its trace (``GensynTrainer``'s executor role)."""

    _offers_client = False  # the face's GensynTrainer sends train() to the network

    def __init__(
        self, *args: Any, role: str | None = None, commit_interval: int | None = None, **kwargs: Any
    ) -> None:
        """Build the Trainer, adding ``GensynCallback(role, commit_interval)`` unless one is given."""
        given = [cb for cb in kwargs.get("callbacks") or () if isinstance(cb, GensynCallback)]
        if role is None:
            role = given[0].role if given else "executor"
        self.role = check_role(role, "GensynTrainer(role=...)", client=self._offers_client)
        if given and given[0].role != self.role:
            raise ConfigError(
                f"GensynTrainer(role={self.role!r}) got GensynCallback(role={given[0].role!r}); "
                "give the role once, or the same role to both",
                key="role", source="GensynTrainer(...)",
            )  # fmt: skip
        super().__init__(*args, **kwargs)
        if self.gensyn_callback is None:
            self.add_callback(GensynCallback(role=self.role, commit_interval=commit_interval))

    @property
    def gensyn_callback(self) -> GensynCallback | None:
        """The run's :class:`GensynCallback`: its ``trace`` holds the roots."""
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, GensynCallback):
                return cb
        return None

    def _data_seed(self) -> int:
        cb = self.gensyn_callback
        seed = self.args.seed if cb is None or cb.seed is None else cb.seed
        if self.args.data_seed is not None:
            seed = self.args.data_seed
        return int(seed)

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[Any] | None:
        """The REE's sampler: an order that is a function of (data seed, epoch) alone."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if dataset is None or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        return ReproducibleSampler(len(dataset), seed=self._data_seed(), shuffle=True)

    def get_train_dataloader(self) -> Any:
        """The Trainer's loader over a :class:`ree.SeededDataset`, as the Lightning path builds it.

        Randomness inside ``__getitem__`` then comes from (data seed, epoch, index),
        never from the training RNG or a worker id. ``datasets.Dataset`` objects are
        left as they are: the Trainer prunes their columns by type.
        """
        ds: Any = self.train_dataset  # type: ignore[has-type]  # transformers is untyped here
        wrap = (
            isinstance(ds, torch.utils.data.Dataset)
            and hasattr(ds, "__len__")
            and not isinstance(ds, torch.utils.data.IterableDataset | SeededDataset)
            and type(ds).__module__.partition(".")[0] != "datasets"
        )
        if not wrap:
            return super().get_train_dataloader()
        self.train_dataset: Any = SeededDataset(ds, seed=self._data_seed())
        try:
            return super().get_train_dataloader()
        finally:
            self.train_dataset = ds

    def train(
        self,
        resume_from_checkpoint: str | bool | os.PathLike[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Train here under the REE, continuing a resumed checkpoint's trace.

        The checkpoint may be a ``checkpoint-N/`` folder or a bare REE checkpoint file.
        """
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
        if path is not None and is_ree_file(path):
            if cb is None:
                raise ConfigError(
                    "resuming from an REE checkpoint file needs a GensynCallback; "
                    "leave GensynTrainer's own in place", key="callbacks", source="GensynTrainer(...)",
                )  # fmt: skip
            a = self.args
            fields = {"train_batch_size": self._train_batch_size, "logging_steps": a.logging_steps,
                      "eval_steps": a.eval_steps, "save_steps": a.save_steps}  # fmt: skip
            where = Path(a.output_dir) / "ree-resume"
            path = resume_folder(path, where, cb.commit_interval, fields, cb.init_args())
        if cb is not None and path is not None:
            cb.resume_from = Path(path)
        try:
            return super().train(str(path) if path is not None else None, *args, **kwargs)
        except BaseException as e:
            if cb is not None:  # the Trainer calls no callback when training raises
                cb.release(e)
            raise

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        """The Trainer's fetch of one optimizer step's micro-batches, shown to ``GensynCallback``.

        transformers 5 takes them all before ``on_step_begin``; an executor's step
        hook names them as the batch of a traced step.
        """
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        cb = self.gensyn_callback
        if cb is not None and cb.step_hook is not None:
            cb.step_batches = list(batches)
        return batches, num_items

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """The Trainer's model load, skipped for a folder that holds only the REE checkpoint.

        ``GensynCallback.on_train_begin`` restores the model from it, checking its root.
        """
        folder = Path(resume_from_checkpoint)
        if (folder / REE_FILE).is_file() and not has_weights(folder):
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)
