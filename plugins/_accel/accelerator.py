"""``Accelerator``: accelerate's ``Accelerator`` that records a trace of state roots under the REE.

When each part runs, and why there:

* construction applies the REE: accelerate resets no determinism flag, and a
  model built after ``Accelerator()`` then gets seeded initial weights.
* ``prepare`` rebuilds the first DataLoader it sees (the training loader) around
  the REE's sampler, and hooks each inner torch optimizer. accelerate's
  ``AcceleratedOptimizer.step`` calls the inner ``step`` only when gradients sync,
  so the post-hook fires once per real optimizer step (NOTES.md, "Accelerate").
* a root is due after the LR scheduler stepped (DESIGN.md, "When a root is
  taken"). A training loop steps the scheduler after the optimizer, in the same
  iteration, so the root of step N is taken just before the next batch reaches
  the loop (or when the pass ends, at the next optimizer step, at ``save_state``,
  or when ``trace`` is read). Leaf 0 is taken the same way, before the first
  batch.
* ``save_state`` adds ``ree-state.safetensors`` (the trace in its ``extra``) to
  accelerate's folder; ``load_state`` and :meth:`Accelerator.load_ree_checkpoint`
  restore from it and check the root. accelerate's own ``*.pkl`` files stay on
  the machine that wrote them (DESIGN.md, "Trust boundaries").
* on a solver (``plugins.accelerate_executor`` sets :data:`plugins._accel.run.RUN_ENV`),
  the run request decides the REE settings, where the run starts (a bare REE
  checkpoint) and where it stops (:mod:`plugins._accel.run`).

Strict mode (``mode="strict"``): the accelerator holds one
:class:`ree.strict.StrictMode` per run, keyed by the seed. The user's loop calls
the model outside any accelerate hook, so the mode is entered by a forward
pre-hook on each prepared model (a forward with gradients enabled: evaluation
under ``no_grad`` stays outside), stays on through the loss, ``backward`` and
the optimizer step, and is left by the optimizer's step post-hook; also when the
training loader starts a pass (its iterator draws a seed with ``random_``, which
strict mode refuses) or hands the loop a batch, before any root, when a forward
or ``backward`` raises, after a ``backward`` whose micro-batch will not step,
and at ``end_training``. A loop that fails between its forward and
``backward`` (in its own loss code) reaches none of these: the mode is left as
the exception leaves ``accelerator.accumulate``, or the loop over the training
loader (which closes its iterator), and in an executor run by an ``excepthook``
before the process's exit handlers run. The generator's state is the ``rng/ree``
leaf of each root, restored by ``load_state`` and
:meth:`Accelerator.load_ree_checkpoint`.

A dispute's traced step (DESIGN.md, "A dispute (Verde)", level 3; a solver's
run whose request carries ``op_trace``): the step starts when the training
loader yields its batch and ends at the optimizer's step post-hook, the region
strict mode covers too. The state of step k-1 is captured there, right after its
root was taken; strict mode is entered next and the tracer last, on top of it
(:mod:`plugins._hf.steps`). The batch leaves are what the loader yielded, so
labels the user's loss code reads outside the model link to them. A step of
several micro-batches (``gradient_accumulation_steps``) needs them all named
when it starts: at its first, the later ones accelerate will feed it (up to the
pass's last batch, where accelerate steps whatever the count) are fetched ahead
from the training loader and handed to the loop in order
(:meth:`plugins._accel.data.TracedDataLoaderShard.fetch_ahead`), so the loop,
``sync_gradients`` and ``end_of_dataloader`` are those of an untraced run;
strict mode and the tracer stay on across them. A test's adversary
(``RunRequest.fault``) runs each step in the same window. What stays untraceable
returns ``op_trace_error`` (the parties re-execute the whole step; the reasons
are in :mod:`plugins._accel.steps`): a step that reads more batches than
accelerate's count (a loop that accumulates on its own), or runs on into the
next pass (``sync_with_dataloader=False``), whose batches cannot be fetched
before the step starts; one whose optimizer steps before the batches fetched for
it are read; one that leaves its region (a root, a save) before its optimizer
step. An ``OpTraceError`` that ends the script (the user's
code does not catch it) is recorded by an ``excepthook`` and reported the same
way, not as a failure.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import accelerate
import torch

from plugins._accel.data import TracedDataLoaderShard, sampler_of
from plugins._accel.run import ExecutorRun, RunComplete
from plugins._accel.steps import (
    EARLY,
    LEFT,
    UNCOUNTED,
    UNFETCHED,
    end_step_at_excepthook,
    later_micro_batches,
    step_scope,
)
from plugins._data import reproducible_loader
from plugins._hf.settings import REE_FILE, check_role, resolve
from ree._checkpoint import load_checkpoint, save_checkpoint
from ree._determinism import DeterminismSnapshot, apply_determinism, restore_determinism
from ree._errors import ReeConfigError, RootMismatchError, StateSchemaError
from ree._state import StateTree, capture_state, restore_state
from ree._trace import Trace

if TYPE_CHECKING:
    from plugins._hf.steps import StepScope
    from ree.strict import StrictMode


class Accelerator(accelerate.Accelerator):  # type: ignore[misc]
    """accelerate's ``Accelerator`` that takes a state root every ``commit_interval`` optimizer steps."""

    def __init__(
        self,
        *args: Any,
        role: str = "executor",
        commit_interval: int | None = None,
        mode: str | None = None,
        seed: int | None = None,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Build accelerate's Accelerator, then apply the REE.

        ``commit_interval``, ``mode``, ``seed`` and ``threads`` default to the gensyn
        config: ``gensyn.yaml`` and the ``GENSYN_*`` variables ``gensyn launch``
        passes to every rank. Every other argument goes to accelerate.
        """
        self.role = check_role(role, "Accelerator(role=...)")
        self._run = ExecutorRun.from_env()
        if self._run is not None:  # a solver's run: the task's settings win over the script's
            commit_interval, mode = self._run.root_every, self._run.mode
            seed, threads = self._run.seed, self._run.threads
        settings = resolve(commit_interval, mode, seed, threads)
        if seed is None:
            from gensyn_integrations.config import load_config

            seed = load_config().ree.seed
        if settings.mode not in ("device", "strict"):
            raise ReeConfigError(f"REE mode {settings.mode!r} is not 'device' or 'strict'")
        self._strict: StrictMode | None = None
        self._strict_on = False  # entered: from a training forward to the optimizer step
        self._exc_at_forward: BaseException | None = None
        super().__init__(*args, **kwargs)
        self.gensyn_mode = settings.mode
        self.gensyn_seed = int(seed)
        self._trace = Trace(commit_interval=settings.commit_interval)
        self.gensyn_step = 0
        self.gensyn_cursor: dict[str, int] = {"epoch": 0, "index": 0, "seed": self.gensyn_seed}
        self._train_loader: TracedDataLoaderShard | None = None
        self._done = 0  # batches per rank of the current epoch already handed to the loop
        self._window = 0  # later micro-batches of the open step, fetched ahead, not yet handed out
        self._pending = False  # a real step happened whose root is not taken yet
        self._hooked: set[int] = set()
        self._snapshot: DeterminismSnapshot | None = apply_determinism(
            self.gensyn_mode, self.gensyn_seed, threads=settings.threads
        )
        if self.gensyn_mode == "strict":
            from ree.strict import StrictGenerator, StrictMode  # lazy: strict's op tables

            self._strict = StrictMode(StrictGenerator(self.gensyn_seed))
        self._losses: list[float] = []  # one per optimizer step, in a solver's run
        self._micro: list[float] = []
        self._scope: StepScope | None = None  # a dispute's tracer, or a test's adversary
        if self._run is not None:
            import atexit

            atexit.register(self._write_partial)
            if self._run.request is not None:
                self._scope = step_scope(self._run.request)
            if self._scope is not None or self._strict is not None:
                end_step_at_excepthook(self)

    # ------------------------------------------------------------------ prepare
    def prepare_data_loader(
        self, data_loader: Any, device_placement: Any = None, slice_fn_for_dispatch: Any = None
    ) -> Any:
        """Prepare a loader; the first one, the training loader, gets the REE's order and a cursor."""
        if self._train_loader is not None or getattr(data_loader, "_is_accelerate_prepared", False):
            return super().prepare_data_loader(data_loader, device_placement, slice_fn_for_dispatch)
        rebuilt = reproducible_loader(data_loader, self.gensyn_seed)
        shard = super().prepare_data_loader(rebuilt, device_placement, slice_fn_for_dispatch)
        traced = TracedDataLoaderShard.adopt(shard, self)
        self._dataloaders[self._dataloaders.index(shard)] = traced
        self._train_loader = traced
        return traced

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        """accelerate's ``prepare``, then a step hook on every new inner optimizer.

        In strict mode, each new model also gets the forward hooks that enter strict mode.
        """
        result = super().prepare(*args, **kwargs)
        if self._strict is not None:
            for model in self._models:
                if id(model) not in self._hooked:
                    self._hooked.add(id(model))
                    model.register_forward_pre_hook(self._before_forward)
                    model.register_forward_hook(self._after_forward, always_call=True)
        for opt in self._optimizers:
            inner = getattr(opt, "optimizer", opt)
            if id(inner) not in self._hooked:
                self._hooked.add(id(inner))
                inner.register_step_pre_hook(self._before_step)
                inner.register_step_post_hook(self._after_step)
        run = self._run
        ready = self._models and self._optimizers and self._schedulers and self._train_loader
        if run is not None and run.start_checkpoint is not None and not run.loaded and ready:
            self._start_run()  # everything the root covers is prepared: resume now
        return result

    def backward(self, loss: Any, **kwargs: Any) -> None:
        """accelerate's ``backward``; a solver's run also keeps the loss for the client's logs."""
        if self._run is not None and hasattr(loss, "detach"):
            self._micro.append(float(loss.detach()))
        try:
            super().backward(loss, **kwargs)
        except BaseException as e:
            self._end_step(e)
            raise
        if not self.sync_gradients:
            if self._in_window():
                return  # the step's later micro-batches are fetched: it stays in its region
            if self._scope is not None:
                self._scope.fail(UNFETCHED)
            self._exit_strict()  # an accumulation micro-batch: no optimizer step follows

    @contextmanager
    def accumulate(self, *models: Any) -> Iterator[None]:
        """accelerate's ``accumulate``; an exception in its block (the loop's loss code) ends the step."""
        with super().accumulate(*models):
            try:
                yield
            except BaseException as e:
                self._end_step(e)
                raise

    # ------------------------------------------------------------------ strict mode
    def _enter_strict(self) -> None:
        if self._strict is not None and not self._strict_on:
            self._strict.__enter__()
            self._strict_on = True

    def _exit_strict(self) -> None:
        self._window = 0
        scope = self._scope
        if scope is not None and scope.is_open:  # it sits on top of strict mode: it goes first
            scope.fail(LEFT)
            scope.end()
        if self._strict is not None and self._strict_on:
            self._strict_on = False
            self._strict.__exit__(None, None, None)

    def _end_step(self, exc: BaseException | None = None) -> None:
        """The step is over (``exc``: the exception that stopped it): leave its scope, then strict mode."""
        if self._scope is not None:
            self._scope.end(exc)
        self._exit_strict()

    def _before_forward(self, module: Any, args: Any) -> None:
        if torch.is_grad_enabled():  # a training forward: its result reaches the state
            self._exc_at_forward = sys.exc_info()[1]
            self._enter_strict()

    def _after_forward(self, module: Any, args: Any, output: Any) -> None:
        # always called, also when the forward raised: then an exception newer than the
        # one (if any) being handled around the call is in flight, and strict mode ends
        exc = sys.exc_info()[1]
        if exc is not None and exc is not self._exc_at_forward:
            self._end_step(exc)

    # ------------------------------------------------------------------ recording
    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._scope is not None and self._scope.is_open:
            return  # the step began at its batch, right after the previous root was taken
        # a loop that feeds batches from its own loader: the previous root is due now
        entered = self._strict_on
        self._flush()  # leaves strict mode: roots are taken outside it
        if entered:
            self._enter_strict()  # the optimizer step itself runs strict

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._in_window() and self._scope is not None:
            self._scope.fail(EARLY.format(n=self._window))
        self._end_step()
        self.gensyn_step += 1
        self._pending = True
        if self._micro:
            self._losses.append(sum(self._micro) / len(self._micro))
            self._micro = []

    def _gensyn_before_pass(self, loader: TracedDataLoaderShard) -> None:
        self._exit_strict()  # the pass's iterator draws its seed with random_
        run = self._run
        if (
            loader is self._train_loader
            and run is not None
            and run.start_checkpoint
            and not run.loaded
        ):
            self._start_run()  # before the pass's order is drawn: it starts at the cursor

    def _gensyn_before_batch(self, loader: TracedDataLoaderShard, batch: Any) -> None:
        scope = self._scope
        if loader is self._train_loader and self._in_window():
            self._window -= 1  # a later micro-batch of the open step, named at its first
            self._advance(loader)
            return
        if scope is not None and scope.is_open:  # another batch before the optimizer step
            scope.fail(UNCOUNTED.format(n=self.gradient_state.num_steps))
        self._flush()
        if loader is self._train_loader:
            step = self.gensyn_step + 1
            if scope is not None and scope.step != step:  # the step's first batch: it starts here
                ahead = loader.fetch_ahead(later_micro_batches(self, loader))
                scope.begin(step, self.capture, lambda: [batch, *ahead], self._enter_strict)
                self._window = len(ahead)
            self._advance(loader)

    def _in_window(self) -> bool:
        """True while the open step has micro-batches fetched ahead that the loop has not had."""
        return self._window > 0 and self._scope is not None and self._scope.is_open

    def _gensyn_before_next(self, loader: TracedDataLoaderShard) -> None:
        scope = self._scope
        if scope is not None and scope.is_open and not self._in_window():
            # reading the dataset is no op of the step's: the tracer ends before it (strict
            # mode stays as it is, as in an untraced run)
            scope.fail(UNCOUNTED.format(n=self.gradient_state.num_steps))

    def _gensyn_left_pass(self, loader: TracedDataLoaderShard) -> None:
        """The loop left the pass part way: the step it was in ends (strict mode too)."""
        scope = self._scope
        if scope is not None and scope.tracing:
            # the exception closing the iterator is not visible here: a traced step is ended
            # with it by the excepthook, or with LEFT when the run goes on
            return
        self._end_step()

    def _gensyn_after_pass(self, loader: TracedDataLoaderShard) -> None:
        self._flush()

    def _advance(self, loader: TracedDataLoaderShard) -> None:
        self._done += 1
        epoch = int(loader.iteration)
        if self._done >= len(loader):
            # the epoch is consumed: the next sample starts the next epoch
            self._done = 0
            self.gensyn_cursor = {**self.gensyn_cursor, "epoch": epoch + 1, "index": 0}
        else:
            index = min(self._done * int(loader.total_batch_size), len(loader.dataset))
            self.gensyn_cursor = {**self.gensyn_cursor, "epoch": epoch, "index": index}

    def _flush(self) -> None:
        """Leave strict mode; take leaf 0 if it is missing, and the pending root if one is due."""
        self._exit_strict()
        run = self._run
        if not self._trace.steps:
            if run is not None and run.start_checkpoint is not None and not run.loaded:
                self._start_run()
            else:
                first = self.capture()
                self._trace.start(first.root)
                if run is not None:
                    self._run_checkpoint(first)
        if self._pending:
            self._pending = False
            tree: StateTree | None = None
            if self._trace.due(self.gensyn_step):
                tree = self.capture()
                self._trace.record(self.gensyn_step, tree.root)
            if run is not None and self.gensyn_step % run.checkpoint_every == 0:
                self._run_checkpoint(tree)
        if run is not None and not run.done and self.gensyn_step >= run.end_step:
            self._complete_run()

    # ------------------------------------------------------------------ a solver's run
    def _start_run(self) -> None:
        """Resume the run request's start checkpoint, with a new trace from its step and root."""
        run = self._run
        assert run is not None
        assert run.start_checkpoint is not None
        run.loaded = True
        self.load_ree_checkpoint(run.start_checkpoint, new_trace=True)
        if self.gensyn_step != run.start_step:
            raise RootMismatchError(
                f"the start checkpoint is at step {self.gensyn_step}, not {run.start_step}"
            )
        self._run_checkpoint(None)

    def _run_checkpoint(self, tree: StateTree | None) -> None:
        run = self._run
        assert run is not None
        path = run.checkpoint_path(self.gensyn_step)
        extra = {"step": self.gensyn_step, "cursor": dict(self.gensyn_cursor)}
        save_checkpoint(path, tree if tree is not None else self.capture(), extra=extra)
        run.checkpoints[self.gensyn_step] = str(path)

    def _complete_run(self) -> None:
        """The root of ``end_step`` is taken: close the trace, write the result, stop the script."""
        run = self._run
        assert run is not None
        run.done = True
        if not self._trace.final:
            tree: StateTree | None = None
            if self.gensyn_step != self._trace.num_steps:
                tree = self.capture()
                self._trace.finish(self.gensyn_step, tree.root)
            else:
                self._trace.final = True
            if self.gensyn_step not in run.checkpoints:
                self._run_checkpoint(tree)
        op = None
        if self._scope is not None and self._scope.target is not None:
            traced = self._scope.finish()
            op = {"op_trace": None if traced.path is None else str(traced.path),
                  "op_inputs": {str(k): str(v) for k, v in traced.inputs.items()},
                  "op_trace_error": traced.error}  # fmt: skip
        run.write_result(self._trace, self.gensyn_step, self._losses, op)
        raise RunComplete

    def _write_partial(self) -> None:
        """At exit, if the run stopped short of ``end_step``: what it did, for a failure commit.

        A traced step stopped by an ``OpTraceError`` says so instead (no failure of the user's code).
        """
        run = self._run
        if run is not None and not run.done:
            error = self._scope.traced.error if self._scope is not None else ""
            run.write_result(self._trace, self.gensyn_step, self._losses,
                             {"op_trace_error": error} if error else None)  # fmt: skip

    @property
    def trace(self) -> Trace:
        """The run's trace so far: ``trace.roots``, ``trace.root`` (pending roots taken first)."""
        if self._models or self._optimizers:
            self._flush()
        return self._trace

    def end_training(self) -> None:
        """Close the trace with the final root, end accelerate's trackers, undo the REE flags."""
        if self._models or self._optimizers:
            self.finish_trace()
        self._exit_strict()
        super().end_training()
        if self._snapshot is not None:
            restore_determinism(self._snapshot)
            self._snapshot = None

    def finish_trace(self) -> Trace:
        """Take any pending root and mark the trace final (the run's last state is its last leaf)."""
        self._flush()
        if not self._trace.final:
            if self.gensyn_step != self._trace.num_steps:
                self._trace.finish(self.gensyn_step, self.capture().root)
            else:
                self._trace.final = True
        return self._trace

    def capture(self) -> StateTree:
        """The state tree right now: model, optimizer, scheduler, scaler, RNG, data cursor."""
        for what, objs in (
            ("model", self._models),
            ("optimizer", self._optimizers),
            ("LR scheduler", self._schedulers),
        ):
            if len(objs) > 1:
                raise StateSchemaError(
                    f"the REE state schema holds one {what}; this run prepared {len(objs)}"
                )
        model = self.unwrap_model(self._models[0]) if self._models else None
        opt = self._optimizers[0] if self._optimizers else None
        sched = self._schedulers[0] if self._schedulers else None
        return capture_state(
            model,
            getattr(opt, "optimizer", opt),
            getattr(sched, "scheduler", sched),
            self.scaler,
            step=self.gensyn_step,
            data=self.gensyn_cursor,
            world_size=self.num_processes,
            mode=self.gensyn_mode,
            ree_rng=self._strict.generator.state() if self._strict is not None else None,
        )

    # ------------------------------------------------------------------ checkpoints
    def save_state(
        self, output_dir: str | None = None, safe_serialization: bool = True, **kwargs: Any
    ) -> str:
        """accelerate's ``save_state``, plus the REE checkpoint (the trace rides in its extra)."""
        self._flush()
        location = super().save_state(output_dir, safe_serialization, **kwargs)
        if self.is_main_process:
            extra = {
                "trace": self._trace.to_json(),
                "step": self.gensyn_step,
                "cursor": dict(self.gensyn_cursor),
            }
            save_checkpoint(Path(location) / REE_FILE, self.capture(), extra=extra)
        self.wait_for_everyone()  # every rank reads the file on load: let it land first
        return str(location)

    def load_state(
        self, input_dir: str | None = None, load_kwargs: Any = None, **kwargs: Any
    ) -> None:
        """accelerate's ``load_state`` (local files), then the REE checkpoint, which must match."""
        super().load_state(input_dir, load_kwargs=load_kwargs, **kwargs)
        folder = Path(input_dir) if input_dir is not None else self._latest_checkpoint()
        self.load_ree_checkpoint(folder / REE_FILE)

    def _latest_checkpoint(self) -> Path:
        # the folder accelerate's load_state picks when it is given none
        base = Path(self.project_dir or ".") / "checkpoints"
        folders = [p for p in base.glob("checkpoint_*") if re.fullmatch(r"checkpoint_\d+", p.name)]
        if not folders:
            raise ReeConfigError(f"no checkpoint_<n> folder under {str(base)!r} to resume from")
        return max(folders, key=lambda p: int(p.name.split("_")[1]))

    def load_ree_checkpoint(self, path: str | os.PathLike[str], *, new_trace: bool = False) -> None:
        """Resume from an REE checkpoint alone: no pickles, so it may come from another machine.

        Restores the model, optimizer, scheduler, scaler, RNGs, trace and data cursor
        (call it after ``prepare``), puts the training loader at the cursor, and
        checks that the live state hashes to the checkpoint's root. ``new_trace``
        starts a new trace at the checkpoint's step and root (what a solver's
        segment commits) instead of continuing the one in its extra JSON.
        """
        ck = load_checkpoint(path)
        extra = dict(ck.extra)
        if new_trace:
            trace = Trace(commit_interval=self._trace.commit_interval)
            trace.start(ck.root, int(ck.tree.leaves["ree/step"]))
            extra["trace"] = trace.to_json()
            extra["step"] = int(ck.tree.leaves["ree/step"])
            extra["cursor"] = {
                k: int(ck.tree.leaves[f"data/{k}"]) for k in ("epoch", "index", "seed")
            }
        if not isinstance(extra.get("trace"), dict):
            raise RootMismatchError(
                f"{str(path)!r} carries no trace: it was not written by gensyn's Accelerator"
            )
        trace = Trace.from_json(extra["trace"])
        if trace.commit_interval != self._trace.commit_interval:
            raise ReeConfigError(
                f"the checkpoint's trace has commit_interval={trace.commit_interval}, this run "
                f"{self._trace.commit_interval}; resume with the same commit_interval"
            )
        saved_world = int(ck.tree.leaves["meta/world_size"])
        if saved_world != self.num_processes:
            raise RootMismatchError(
                f"the checkpoint was written by {saved_world} processes, this run has "
                f"{self.num_processes}; the world size is part of the state root"
            )
        model = self.unwrap_model(self._models[0]) if self._models else None
        opt = self._optimizers[0] if self._optimizers else None
        sched = self._schedulers[0] if self._schedulers else None
        restore_state(
            ck.tree,
            model,
            getattr(opt, "optimizer", opt),
            getattr(sched, "scheduler", sched),
            self.scaler,
            rng=True,
        )
        if self._strict is not None:
            if "rng/ree" not in ck.tree.leaves:
                raise RootMismatchError(
                    f"{str(path)!r} holds no strict-mode generator state (rng/ree): it was "
                    "written in device mode; resume it with mode='device'"
                )
            self._strict.generator.set_state(ck.tree.leaves["rng/ree"])
        self._trace, self.gensyn_step = trace, int(extra["step"])
        self.gensyn_cursor = {k: int(v) for k, v in extra["cursor"].items()}
        self._pending = False
        loader = self._train_loader
        if loader is not None:
            epoch, index = self.gensyn_cursor["epoch"], self.gensyn_cursor["index"]
            loader.iteration = epoch
            sampler_of(loader).set_cursor(epoch, index)
            self._done = index // int(loader.total_batch_size)
        root = self.capture().root
        if root != ck.root:
            raise RootMismatchError(
                f"after resuming, the live state hashes to {root} but the checkpoint holds "
                f"{ck.root}: the model, optimizer or scheduler differs from the one that wrote it"
            )

    @property
    def gensyn_epoch(self) -> int:
        """The epoch the next training batch belongs to (where a resumed loop starts)."""
        return int(self.gensyn_cursor["epoch"])
