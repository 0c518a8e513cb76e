"""``GensynCallback``: record a Hugging Face Trainer run's trace of state roots under the REE.

When each hook runs, and why there (NOTES.md, "Transformers 5" and the traps):

* ``on_train_begin``: applies the REE. The Trainer seeds and sets its own flags
  before this point, so construction time is too early. The optimizer, the
  scheduler and the prepared training loader exist by now: the loader gets a
  :class:`ree.ReproducibleSampler`, the inner torch optimizer a step post-hook,
  and the run records leaf 0 (or, on a resume, restores and checks the REE
  checkpoint of the folder it resumes from).
* the optimizer step post-hook counts real optimizer steps (``ree/step``).
  ``accelerate`` calls the inner ``step`` only when gradients sync, so
  accumulation micro-batches never count.
* ``on_substep_end`` / ``on_step_end``: one per micro-batch, so they advance the
  data cursor. ``on_step_end`` runs after the optimizer, the scheduler,
  ``zero_grad`` and ``global_step += 1``: the moment DESIGN.md names for a root.
* ``on_save`` runs after ``checkpoint-N/`` is written; the REE checkpoint
  (``ree-state.safetensors``) joins it. The trace itself rides in
  ``trainer_state.json`` through :class:`transformers.trainer_callback.ExportableState`.
* ``on_train_end`` closes the trace with the final root and undoes the REE flags.

Strict mode (``mode="strict"``): the callback holds one
:class:`ree.strict.StrictMode` per run, keyed by the seed, and enters it for each
optimizer step only: from ``on_step_begin`` (the step's micro-batches are fetched
by then) to the top of ``on_step_end`` (the optimizer, the scheduler and
``zero_grad`` ran by then). The forward, the backward, gradient clipping and the
optimizer run strict kernels; data loading (whose iterator draws its seed with
``random_``, which strict mode refuses), logging, evaluation, saving and every
root stay outside. The generator's state is the ``rng/ree`` leaf of each root,
restored on a resume. ``on_train_end`` and :meth:`GensynCallback.release` leave
the mode, so a run stopped by an exception must call ``release()`` (as the
Trainer calls no callback then).

An executor's dispute tracer (:attr:`GensynCallback.step_hook`, DESIGN.md "A
dispute (Verde)", level 3) covers the same region: opened in ``on_step_begin``
(the state of step k-1 captured first, then strict mode, then the tracer on
top), closed at the top of ``on_step_end`` before strict mode, or by
``release(exc)`` with the exception that stopped the step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from gensyn_integrations.errors import ConfigError
from plugins._hf.data import install_reproducible_sampler
from plugins._hf.settings import REE_FILE, check_role, resolve
from ree._checkpoint import load_checkpoint, save_checkpoint
from ree._determinism import apply_determinism, restore_determinism
from ree._errors import CheckpointError, ReeConfigError, RootMismatchError
from ree._state import StateTree, capture_state, restore_state
from ree._trace import Trace

if TYPE_CHECKING:
    from ree.strict import StrictMode

SAVED_KEY = "_gensyn_saved"  # the attribute trainer_state.json carries for this callback


class StepHook(Protocol):
    """What an executor runs around each optimizer step (:class:`plugins._hf.steps.StepScope`)."""

    def begin(self, step: int, capture: Callable[[], StateTree],
              batches: Callable[[], Sequence[Any]], before: Callable[[], None]) -> None: ...  # fmt: skip

    def end(self, exc: BaseException | None = None) -> None: ...


@dataclass
class _Live:
    """The objects a root covers, as the Trainer hands them to ``on_train_begin``."""

    model: Any
    optimizer: Any  # the torch optimizer inside accelerate's AcceleratedOptimizer
    scheduler: Any
    scaler: Any
    world_size: int


class GensynCallback(TrainerCallback, ExportableState):  # type: ignore[misc]
    """Record a Trainer run's trace: a state root every ``commit_interval`` optimizer steps."""

    def __init__(
        self,
        role: str = "executor",
        commit_interval: int | None = None,
        *,
        mode: str | None = None,
        seed: int | None = None,
        threads: int | None = None,
        resume_from: str | os.PathLike[str] | None = None,
    ) -> None:
        """Record roots under the REE in the executor role.

        In the client role the callback only carries the settings of the task that
        ``GensynTrainer(callbacks=[GensynCallback(role="client")])`` posts; a
        Trainer that would train here with it refuses to start.

        ``commit_interval``, ``mode`` and ``threads`` default to the gensyn config
        (``task.commit_interval``, ``ree.mode``, ``ree.threads``); ``seed`` defaults
        to the Trainer's ``args.seed``. ``resume_from`` names the checkpoint folder a
        resumed run starts from, when it is not ``output_dir/checkpoint-<step>``
        (``GensynTrainer.train`` sets it for you).
        """
        self.role = check_role(role, "GensynCallback(role=...)", client=True)
        settings = resolve(commit_interval, mode, seed, threads)
        if settings.mode not in ("device", "strict"):
            raise ReeConfigError(f"REE mode {settings.mode!r} is not 'device' or 'strict'")
        self.commit_interval = settings.commit_interval
        self.mode = settings.mode
        self.seed = seed
        self.threads = settings.threads
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.trace = Trace(commit_interval=self.commit_interval)
        self.step = 0
        self.cursor: dict[str, int] = {"epoch": 0, "index": 0, "seed": 0}
        self._gensyn_saved: dict[str, Any] | None = None  # set by HF when it restores callbacks
        self._live: _Live | None = None
        self._snapshot: Any = None
        self._hooks: list[Any] = []
        self._steps_at_last_end = 0
        self._batch = 1  # samples one micro-batch consumes, over all ranks
        self._epoch_batches = 0  # micro-batches per rank in one epoch
        self._done = 0  # micro-batches of the current epoch already trained
        self._n = 0
        self._cache: tuple[int, StateTree] | None = None
        self._strict: StrictMode | None = None  # strict mode: the run's mode, made at train begin
        self._strict_on = False  # whether it is entered (during an optimizer step only)
        # An executor's dispute tracer (DESIGN.md, "A dispute (Verde)", level 3): opened in
        # on_step_begin on top of strict mode, left before it. ExecutorTrainer fills step_batches.
        self.step_hook: StepHook | None = None
        self.step_batches: list[Any] = []

    # ------------------------------------------------------------------ training
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Apply the REE, make the data order reproducible, and record (or resume) the trace."""
        if self.role == "client":
            raise ConfigError(
                "GensynCallback(role='client') is in a Trainer that is about to train here; the "
                "client role sends training to the network through GensynTrainer: use "
                "GensynTrainer(..., callbacks=[GensynCallback(role='client')]), or role='executor'",
                key="role", source="GensynCallback(role=...)",
            )  # fmt: skip
        seed = int(args.seed if self.seed is None else self.seed)
        data_seed = int(args.data_seed) if getattr(args, "data_seed", None) is not None else seed
        snapshot = apply_determinism(self.mode, seed, threads=self.threads)
        if self._snapshot is None:
            self._snapshot = snapshot
        self._exit_strict()
        self._strict = None
        if self.mode == "strict":
            from ree.strict import StrictGenerator, StrictMode  # lazy: strict's op tables

            self._strict = StrictMode(StrictGenerator(seed))
        loader = kwargs.get("train_dataloader")
        if loader is None:
            raise ReeConfigError("GensynCallback needs the Trainer's training DataLoader")
        install_reproducible_sampler(loader, data_seed)
        self._n = len(loader.dataset)
        self._batch = int(getattr(loader, "total_batch_size", None) or loader.batch_size or 1)
        self._epoch_batches = len(loader)
        optimizer = kwargs.get("optimizer")
        inner = getattr(optimizer, "optimizer", optimizer)
        scheduler = kwargs.get("lr_scheduler")
        self._live = _Live(
            model=kwargs.get("model"),
            optimizer=inner,
            scheduler=getattr(scheduler, "scheduler", scheduler),
            scaler=getattr(optimizer, "scaler", None),
            world_size=int(args.world_size),
        )
        self._remove_hooks()
        if inner is not None:
            self._hooks.append(inner.register_step_post_hook(self._count_step))
        self.trace = Trace(commit_interval=self.commit_interval)
        self.step, self._done, self._cache = 0, 0, None
        self.cursor = {"epoch": 0, "index": 0, "seed": data_seed}
        try:
            if state.global_step > 0:
                self._resume(args, state)
            else:
                self.trace.start(self.capture().root)
        except BaseException:
            # the Trainer never calls on_train_end after a failed start: undo here
            self._live = None
            self.on_train_end(args, state, control)
            raise
        self._steps_at_last_end = self.step

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

    def _end_step(self, exc: BaseException | None = None) -> None:
        if self.step_hook is not None:
            self.step_hook.end(exc)  # the tracer sits on top of strict mode: it goes first
        self._exit_strict()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Strict mode: enter it for this step's forwards, backwards and optimizer step.

        The step's micro-batches are fetched by now (the Trainer takes them all
        before the first one runs), so an executor's step hook opens here too.
        """
        if self.step_hook is None:
            self._enter_strict()
            return
        self.step_hook.begin(self.step + 1, self.capture, lambda: self.step_batches,
                             self._enter_strict)  # fmt: skip

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """An accumulation micro-batch trained: advance the data cursor, take no root."""
        self._advance()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After the scheduler stepped: advance the cursor, and take a root if one is due."""
        self._end_step()  # before any root, and before the Trainer logs, saves, evaluates
        self._advance()
        if self.step == self._steps_at_last_end:
            return  # the optimizer skipped its step (an fp16 overflow): no new state
        self._steps_at_last_end = self.step
        if self.trace.due(self.step):
            self.trace.record(self.step, self.capture().root)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Leave strict mode if training stopped inside an accumulation step."""
        self._end_step()

    def _advance(self) -> None:
        self._done += 1
        if self._done >= self._epoch_batches:
            # the epoch is consumed: the next sample starts the next epoch
            self._done = 0
            self.cursor = {**self.cursor, "epoch": self.cursor["epoch"] + 1, "index": 0}
        else:
            self.cursor = {**self.cursor, "index": min(self._done * self._batch, self._n)}

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the trace with the final root, and undo the hooks and the REE flags."""
        if self._live is not None and self.trace.steps and not self.trace.final:
            if self.step != self.trace.num_steps:
                self.trace.finish(self.step, self.capture().root)
            else:
                self.trace.final = True
        self.release()

    def release(self, exc: BaseException | None = None) -> None:
        """Leave strict mode, remove the optimizer hook and undo the REE's settings (idempotent).

        ``on_train_end`` calls it; so does whoever stops a run by raising, since the
        Trainer then never calls ``on_train_end``: ``exc`` is that exception, for
        the step hook.
        """
        self._end_step(exc)
        self._remove_hooks()
        if self._snapshot is not None:
            restore_determinism(self._snapshot)
            self._snapshot = None

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    # ------------------------------------------------------------------ state
    def capture(self) -> StateTree:
        """The state tree of the run right now (model, optimizer, scheduler, RNG, cursor)."""
        if self._live is None:
            raise ReeConfigError(
                "the run has not started: no state to capture before on_train_begin"
            )
        live = self._live
        return capture_state(
            live.model,
            live.optimizer,
            live.scheduler,
            live.scaler,
            step=self.step,
            data=self.cursor,
            world_size=live.world_size,
            mode=self.mode,
            ree_rng=self._strict.generator.state() if self._strict is not None else None,
        )

    def state(self) -> dict[str, Any]:
        """What ``trainer_state.json`` keeps: the settings, and the trace and root at save time.

        The Trainer calls this while writing a checkpoint (and once before training,
        when there is nothing to capture yet).
        """
        saved = None
        if self._live is not None:
            tree = self.capture().snapshot()
            self._cache = (self.step, tree)
            saved = {
                "trace": self.trace.to_json(),
                "step": self.step,
                "cursor": dict(self.cursor),
                "root": tree.root,
            }
        return {"args": self.init_args(), "attributes": {SAVED_KEY: saved}}

    def init_args(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this callback's settings."""
        return {
            "role": self.role,
            "commit_interval": self.commit_interval,
            "mode": self.mode,
            "seed": self.seed,
            "threads": self.threads,
        }

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Add the REE checkpoint to the folder the Trainer just wrote."""
        if not args.should_save or self._live is None:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return  # a save the Trainer routed elsewhere (a hyper-parameter search run)
        if self._cache is not None and self._cache[0] == self.step:
            tree = self._cache[1]
        else:
            tree = self.capture()
        extra = {
            "trace": self.trace.to_json(),
            "step": self.step,
            "cursor": dict(self.cursor),
            "transformers": {"global_step": int(state.global_step)},
        }
        save_checkpoint(folder / REE_FILE, tree, extra=extra)
        self._cache = None

    def _saved_state(self, state: Any) -> dict[str, Any] | None:
        if self._gensyn_saved is not None:
            return self._gensyn_saved
        entry = (getattr(state, "stateful_callbacks", None) or {}).get(type(self).__name__)
        if isinstance(entry, list):  # several callbacks of one class: the Trainer keeps a list
            entry = entry[0] if entry else None
        if not isinstance(entry, dict):
            return None
        saved = (entry.get("attributes") or {}).get(SAVED_KEY)
        return saved if isinstance(saved, dict) else None

    def _resume(self, args: Any, state: Any) -> None:
        """Continue the saved trace: load the REE checkpoint, restore from it, check the root."""
        saved = self._saved_state(state)
        if saved is None:
            raise CheckpointError(
                f"the run resumes at global step {state.global_step}, but its trainer_state.json "
                "carries no GensynCallback state: the checkpoint was written without "
                "GensynCallback, so its trace cannot be continued. Start from step 0"
            )
        folder = self.resume_from or Path(args.output_dir) / f"checkpoint-{state.global_step}"
        path = folder if folder.suffix == ".safetensors" else folder / REE_FILE
        if not path.is_file():
            raise CheckpointError(
                f"no REE checkpoint at {str(path)!r} to resume from; pass "
                "GensynCallback(resume_from=<checkpoint folder>) or use GensynTrainer, whose "
                "train(resume_from_checkpoint=...) tells the callback where it is"
            )
        ck = load_checkpoint(path, expected_root=saved["root"])
        trace = Trace.from_json(saved["trace"])
        if trace.commit_interval != self.commit_interval:
            raise ReeConfigError(
                f"the checkpoint's trace has commit_interval={trace.commit_interval}, this callback "
                f"{self.commit_interval}; resume with the same commit_interval"
            )
        assert self._live is not None
        live = self._live
        saved_world = int(ck.tree.leaves["meta/world_size"])
        if saved_world != live.world_size:
            raise RootMismatchError(
                f"the checkpoint was written with world size {saved_world}, this run has "
                f"{live.world_size}; the world size is part of the state root, so resume on "
                f"{saved_world} processes"
            )
        # The REE checkpoint, not the Trainer's pickles, is what crosses machines; loading
        # from it makes a resume from it alone (no optimizer.pt, no rng_state.pth) exact.
        restore_state(ck.tree, live.model, live.optimizer, live.scheduler, live.scaler, rng=True)
        if self._strict is not None:
            if "rng/ree" not in ck.tree.leaves:
                raise RootMismatchError(
                    "the checkpoint holds no strict-mode generator state (rng/ree): it was "
                    "written in device mode; resume it with mode='device'"
                )
            self._strict.generator.set_state(ck.tree.leaves["rng/ree"])
        self.trace, self.step = trace, int(saved["step"])
        self.cursor = {k: int(v) for k, v in saved["cursor"].items()}
        self._done = self.cursor["index"] // self._batch
        root = self.capture().root
        if root != ck.root:
            raise RootMismatchError(
                f"after resuming, the live state hashes to {root} but the checkpoint holds "
                f"{ck.root}: the model, optimizer or scheduler differs from the one that wrote it"
            )
