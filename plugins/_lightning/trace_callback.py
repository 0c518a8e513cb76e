"""``GensynTraceCallback``: record a Lightning run's trace of state roots under the REE.

When each hook runs, and why there (NOTES.md, "Lightning resets determinism" and
"Lightning's step order"):

* ``setup`` (stage ``fit``): installs :class:`SafetensorsCheckpointIO` and makes
  the training DataLoader reproducible. This must precede Lightning's
  ``setup_data``, which creates the first iterator before ``on_train_start``.
* ``on_train_start``: applies the REE (Lightning's ``Trainer.__init__`` resets the
  determinism flags, so construction time is too early), restores the RNGs of a
  resumed run, and records leaf 0, the initial state root.
* optimizer step post-hooks: count real optimizer steps (the REE's ``ree/step``);
  micro-batches that only accumulate gradients never step.
* ``on_train_batch_end``: runs after the LR scheduler stepped; a root is taken
  when a step happened and the step is a multiple of ``commit_interval``.
* ``on_train_end``: closes the trace with the final root.

Strict mode (``mode="strict"``): the callback holds one
:class:`ree.strict.StrictMode` per run, keyed by ``seed``, and enters it for
each training batch only: from ``on_train_batch_start`` (the batch is fetched
by then) to the top of ``on_train_batch_end`` (the optimizer and the scheduler
stepped by then), so the forward, the backward and the optimizer run strict
kernels while the data loading (whose iterator draws its seed with
``random_``, which strict mode refuses), validation and every root stay
outside it. The generator's state is the ``rng/ree`` leaf of each root, and a
resumed run restores it from its checkpoint. The mode is left at teardown and
on an exception: no dispatch mode outlives the run.

A step's own context (:meth:`TraceCallbackMixin.step_context`, None here; the
executor's operator tracer and adversary hooks): entered at the step's first
micro-batch, after strict mode (a tracer must sit above strict mode, to see the
step's ops and not the strict kernels' own), and left at the top of the
``on_train_batch_end`` whose optimizer stepped, before strict mode is left. While
it is open, strict mode stays entered across the step's micro-batches.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from plugins._data import reproducible_loader
from plugins._lightning.checkpoint_io import TREE_KEY
from ree._determinism import apply_determinism, restore_determinism
from ree._errors import ReeConfigError, RootMismatchError, StateSchemaError
from ree._state import StateTree, capture_state, restore_rng
from ree._trace import Trace

if TYPE_CHECKING:
    from ree.strict import StrictMode


def _host_rng_state() -> tuple[Any, Any, Any]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _set_host_rng_state(state: tuple[Any, Any, Any]) -> None:
    torch.set_rng_state(state[0])
    random.setstate(state[1])
    np.random.set_state(state[2])


class TraceCallbackMixin:
    """The behaviour of ``GensynTraceCallback``; mixed into each Lightning's ``Callback``."""

    _pl: ModuleType  # lightning.pytorch or pytorch_lightning, set by the concrete class
    _checkpoint_io_cls: type

    def __init__(
        self,
        commit_interval: int = 10,
        *,
        mode: str = "device",
        seed: int = 0,
        threads: int | None = 1,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Record a root every ``commit_interval`` optimizer steps.

        ``checkpoint_dir``: when set, an REE checkpoint is written there at every
        root (``step-00000005.safetensors``) and at the end of training.
        """
        if mode not in ("device", "strict"):
            raise ReeConfigError(f"REE mode {mode!r} is not 'device' or 'strict'")
        self._pending: list[tuple[int, Future[str]]] = []
        self._hasher: ThreadPoolExecutor | None = None
        self.trace = Trace(commit_interval=commit_interval)
        self.mode = mode
        self.seed = int(seed)
        self.threads = threads
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.step = 0
        self.cursor = {"epoch": 0, "index": 0, "seed": self.seed}
        self._steps_at_last_batch_end = 0
        self._snapshot: Any = None
        self._hooks: list[Any] = []
        self._sampler: Any = None
        self._batch_size = 1
        self._restored: dict[str, Any] | None = None
        self._source_patch: tuple[Any, Any] | None = None
        self._trainer_for_state: Any = None
        self._rng_before_validation: tuple[Any, Any, Any] | None = None
        self._strict: StrictMode | None = None  # strict mode: the run's mode, made at train start
        self._strict_on = False  # whether it is entered (during a training batch only)
        self._step_cm: AbstractContextManager[Any] | None = None  # the open step's context

    # ------------------------------------------------------------------ the trace
    @property
    def trace(self) -> Trace:
        """The run's trace: ``.roots``, ``.root``, ``.steps`` (roots still hashing are waited for)."""
        self._settle()
        return self._trace

    @trace.setter
    def trace(self, value: Trace) -> None:
        self._settle()
        self._trace = value

    def _record_soon(self, step: int, tree: StateTree) -> None:
        """Record the root of ``tree`` at ``step``, hashed beside the next steps.

        The tree is copied first (the next step changes the live tensors), then a
        background thread hashes it while training goes on: hashlib releases the
        GIL, so the root costs a copy on the training thread, not a hash. Every
        read of :attr:`trace` waits for the roots still hashing, in step order.
        """
        snap = tree.snapshot()
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gensyn-root")
        self._pending.append((step, self._hasher.submit(lambda: snap.root)))

    def _settle(self) -> None:
        pending, self._pending = self._pending, []
        for step, root in pending:
            self._trace.record(step, root.result())

    def _stop_hasher(self) -> None:
        self._settle()
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Install the safe CheckpointIO and wrap the training data source (fit only)."""
        if stage != "fit":
            return
        if not isinstance(trainer.strategy.checkpoint_io, self._checkpoint_io_cls):
            trainer.strategy.checkpoint_io = self._checkpoint_io_cls()
        source = trainer.fit_loop._data_source
        original = source.dataloader

        def reproducible() -> Any:
            loader = reproducible_loader(original(), self.seed)
            self._sampler = loader.sampler
            self._batch_size = loader.batch_size or 1
            if self._restored is not None:
                cursor = self._restored["cursor"]
                self._sampler.set_cursor(cursor["epoch"], cursor["index"])
            return loader

        source.dataloader = reproducible
        self._source_patch = (source, original)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Undo what setup and on_train_start changed: strict mode, hooks, the data source, REE flags."""
        self._close_step(None)
        self._exit_strict()
        self._stop_hasher()
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        if self._source_patch is not None:
            source, original = self._source_patch
            source.dataloader = original
            self._source_patch = None
        if self._snapshot is not None:
            restore_determinism(self._snapshot)
            self._snapshot = None

    # ------------------------------------------------------------------ training
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Apply the REE, restore a resumed run's RNGs, and record the initial root."""
        snap = apply_determinism(self.mode, self.seed, threads=self.threads)
        if self.mode == "strict":
            from ree.strict import StrictGenerator, StrictMode  # lazy: strict's op tables

            self._exit_strict()
            self._strict = StrictMode(StrictGenerator(self.seed))
        if self._snapshot is None:
            self._snapshot = snap
        optimizers = trainer.optimizers
        if len(optimizers) > 1:
            raise StateSchemaError(
                f"the REE state schema holds one optimizer; this run has {len(optimizers)}"
            )
        self._hooks = [opt.register_step_post_hook(self._count_step) for opt in optimizers]
        if self._restored is None:
            self.trace.start(self._capture(trainer).root)
        else:
            self._resume(trainer)
        self._steps_at_last_batch_end = self.step

    def _resume(self, trainer: Any) -> None:
        state = self._restored
        assert state is not None
        tree = state.get(TREE_KEY)
        if not isinstance(tree, StateTree):
            raise RootMismatchError(
                "the checkpoint carries no REE state tree; it was not written "
                "through SafetensorsCheckpointIO"
            )
        trace = Trace.from_json(state["trace"])
        if trace.commit_interval != self.trace.commit_interval:
            raise ReeConfigError(
                f"the checkpoint's trace has commit_interval={trace.commit_interval}, this callback "
                f"{self.trace.commit_interval}; resume with the same commit_interval"
            )
        restore_rng(tree)
        if self._strict is not None:
            if "rng/ree" not in tree.leaves:
                raise RootMismatchError(
                    "the checkpoint holds no strict-mode generator state (rng/ree): it was "
                    "written in device mode; resume it with mode='device'"
                )
            self._strict.generator.set_state(tree.leaves["rng/ree"])
        self.trace, self.step, self.cursor = trace, int(state["step"]), dict(state["cursor"])
        live = self._capture(trainer).root
        if live != tree.root:
            raise RootMismatchError(
                f"after resuming, the live state hashes to {live} but the checkpoint holds "
                f"{tree.root}: the model, optimizer or scheduler differs from the one that wrote it"
            )

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Put the training RNG back as the last training batch left it.

        Validation must never draw from the training RNG (DESIGN.md), but Lightning
        builds the validation iterator, which draws a seed, before any validation
        hook runs; so the state is kept at each training batch end instead.
        """
        if self._rng_before_validation is not None:
            _set_host_rng_state(self._rng_before_validation)
            self._rng_before_validation = None

    def _count_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.step += 1

    # ------------------------------------------------------------------ strict mode
    def _enter_strict(self) -> None:
        if self._strict is not None and not self._strict_on:
            self._strict.__enter__()
            self._strict_on = True

    def _exit_strict(self) -> None:
        if self._strict is not None and self._strict_on:
            self._strict_on = False
            self._strict.__exit__(None, None, None)

    # ------------------------------------------------------------------ one step's context
    def step_context(
        self, trainer: Any, batch: Any, batch_idx: int
    ) -> AbstractContextManager[Any] | None:
        """A context for the whole optimizer step that starts with this batch, or None.

        Called at the step's first micro-batch, before strict mode is entered (it
        may capture the state, or fetch data); the context is entered after strict
        mode and left when the optimizer has stepped. None here.
        """
        return None

    def _close_step(self, exc: BaseException | None) -> None:
        """Leave the open step's context (with the exception that stopped the step, if any)."""
        cm, self._step_cm = self._step_cm, None
        if cm is not None:
            cm.__exit__(type(exc) if exc is not None else None, exc,
                        exc.__traceback__ if exc is not None else None)  # fmt: skip

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Strict mode: enter it for this batch's forward, backward and optimizer step.

        At a step's first micro-batch, also enter its :meth:`step_context` (above strict mode).
        """
        if self._step_cm is not None:
            return  # a later micro-batch of an open step: strict mode and its context stay entered
        cm = self.step_context(trainer, batch, batch_idx)
        self._enter_strict()
        if cm is not None:
            cm.__enter__()
            self._step_cm = cm

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Leave strict mode if a batch ended the epoch early (``on_train_batch_start`` gave -1)."""
        self._close_step(None)
        self._exit_strict()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Undo everything, as ``teardown`` would: Lightning calls no callback ``teardown`` after a failure.

        Without it a failed fit (user code raising, or an executor stopping at its
        start checkpoint) would leave strict mode pushed and the REE's process-wide
        flags (deterministic algorithms, threads) set in the caller's process. An open
        step's context is left first, with the exception (a tracer keeps why it stopped).
        """
        self._close_step(exception)
        self.teardown(trainer, pl_module, "fit")

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After the scheduler stepped: advance the data cursor, and take a root if one is due."""
        if self.step != self._steps_at_last_batch_end:
            self._close_step(None)  # the step is done: its context, then strict mode
        if self._step_cm is None:
            self._exit_strict()  # before any root: captures and copies run outside strict mode
        self._rng_before_validation = _host_rng_state()
        self._advance_cursor(trainer, batch_idx)
        if self.step == self._steps_at_last_batch_end:
            return  # an accumulation micro-batch: no optimizer step, no root
        self._steps_at_last_batch_end = self.step
        if self._trace.due(self.step):
            if self.checkpoint_dir is not None:  # the checkpoint carries the trace: hash now
                self.trace.record(self.step, self._capture(trainer).root)
                trainer.save_checkpoint(self.checkpoint_path(self.step), weights_only=False)
            else:
                self._record_soon(self.step, self._capture(trainer))

    def _advance_cursor(self, trainer: Any, batch_idx: int) -> None:
        n = len(self._sampler) if self._sampler is not None else 0
        index = (
            min((batch_idx + 1) * self._batch_size, n) if n else (batch_idx + 1) * self._batch_size
        )
        epoch = trainer.current_epoch
        if n and index >= n:
            epoch, index = (
                epoch + 1,
                0,
            )  # the epoch is consumed: the next sample starts the next one
        self.cursor = {"epoch": int(epoch), "index": int(index), "seed": self.seed}

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the trace with the final state root (and checkpoint it if asked)."""
        self._close_step(None)
        self._exit_strict()
        if self.trace.final or not self.trace.steps:
            return
        if self.step != self.trace.num_steps:
            self.trace.finish(self.step, self._capture(trainer).root)
            if self.checkpoint_dir is not None:
                trainer.save_checkpoint(self.checkpoint_path(self.step), weights_only=False)
        else:
            self.trace.final = True

    # ------------------------------------------------------------------ state
    def checkpoint_path(self, step: int) -> Path:
        """Where the checkpoint of ``step`` goes in ``checkpoint_dir``."""
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir / f"step-{step:08d}.safetensors"

    def capture(self, trainer: Any) -> StateTree:
        """The state tree of the run right now (model, optimizer, scheduler, RNG, cursor)."""
        return self._capture(trainer)

    def _capture(self, trainer: Any) -> StateTree:
        configs = trainer.lr_scheduler_configs
        if len(configs) > 1:
            raise StateSchemaError(
                f"the REE state schema holds one LR scheduler; this run has {len(configs)}"
            )
        optimizers = trainer.optimizers
        return capture_state(
            trainer.lightning_module,
            optimizers[0] if optimizers else None,
            configs[0].scheduler if configs else None,
            getattr(trainer.precision_plugin, "scaler", None),
            step=self.step,
            data=self.cursor,
            world_size=trainer.world_size,
            mode=self.mode,
            ree_rng=self._strict.generator.state() if self._strict is not None else None,
        )

    def state_dict(self) -> dict[str, Any]:
        """Lightning calls this while saving; the REE tree rides along for the CheckpointIO."""
        trainer = self._trainer_for_state
        out: dict[str, Any] = {
            "trace": self.trace.to_json(),
            "step": self.step,
            "cursor": dict(self.cursor),
            "mode": self.mode,
            "seed": self.seed,
        }
        if trainer is not None:
            out[TREE_KEY] = self._capture(trainer).snapshot()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the restored state; it is applied in ``setup_data`` and ``on_train_start``."""
        self._restored = dict(state_dict)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Remember the trainer so :meth:`state_dict` can capture the live state."""
        self._trainer_for_state = trainer
