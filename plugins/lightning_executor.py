"""The Lightning executor: a LightningModule and its data, trained by a Trainer under the REE.

It implements ``gensyn_execute_task`` and ``gensyn_verify_interval`` for
``framework="lightning"``. The task's entry point (``module:function`` in the
bundle's code, or an installed module) returns a mapping or object with
``module`` (a ``lightning.pytorch.LightningModule``) and either ``datamodule``
or ``train_dataloader``. The run is ``Trainer(strategy=SingleDeviceStrategy(
checkpoint_io=SafetensorsCheckpointIO()), callbacks=[<a GensynTraceCallback>],
max_steps=end_step)``: what ``GensynStrategy(role="executor")`` sets up, with
the same roots. The trace is the one :class:`GensynTraceCallback` records, and
the checkpoints are REE checkpoints written through the safetensors
CheckpointIO, so a run resumes from any of them (the solver's segments, a
verifier's interval) with ``ckpt_path``.

The RunResult contract is the torch executor's: a trace covering
``start_step..steps_done`` with a root every ``root_every`` steps and one at the
end, a checkpoint at ``start_step``, every ``checkpoint_every`` steps and at the
end, and a failure commit (:func:`coordinator.tasks.failure_digest`) when the
user's code raises. The training loss of each optimizer step goes in
``RunResult.losses``; everything the module logs on a step (``self.log``) is
written beside the checkpoints as :data:`coordinator.tasks._results.METRICS_FILE`,
which ``publish_run`` puts in the run manifest for the client's progress bar
and loggers.

Dispute level 3 (DESIGN.md, "A dispute (Verde)"): a request with ``op_trace``
runs its one step under :func:`plugins._optrace.traced_step`, from the step's
first ``on_train_batch_start`` (the state captured there is the committed state
of step k-1, checked against its root) to the top of the ``on_train_batch_end``
whose optimizer stepped; the batch is every micro-batch of the step, fetched
ahead, and ``self.log`` runs outside the tracer (:mod:`plugins._lightning.step_window`).
A step that cannot be traced returns ``op_trace_error`` and no trace. The
adversary hooks (``ulp_op``) apply to untraced steps through
:func:`plugins._optrace.fault_mode`, over the same window.

Layering note: the Trainer pieces live in :mod:`plugins._lightning` (the face,
``gensyn_integrations.lightning``, re-exports them) and are imported when a task
runs, never when the plugin is registered.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordinator.tasks import RunRequest, RunResult, TaskRunError
from coordinator.tasks._results import write_metrics
from gensyn_integrations.hookspecs import hookimpl
from plugins._code import call_entry, code_path, import_shipped, load_code_file
from plugins._lightning import twins
from plugins._runs import check_ree_mode, failure_result, verify_interval
from ree._trace import Trace
from ree.optrace import OpTraceError

__all__ = ["FRAMEWORK", "build_shipped", "gensyn_execute_task", "gensyn_verify_interval", "run_lightning"]

FRAMEWORK = "lightning"
_PRECISIONS = {"fp32": "32-true", "fp64": "64-true"}


class _StopAtStart(Exception):  # noqa: N818 - control flow, never shown to a user
    """Raised after the initial checkpoint of an ``end_step == start_step`` run is written."""


def _load_job(req: RunRequest) -> tuple[Any, dict[str, Any]]:
    get = call_entry(req)
    entry = req.spec.entry
    module = get("module")
    if module is None:
        raise TaskRunError(f"entry {entry!r} returned a job without 'module'")
    dm, dl = get("datamodule"), get("train_dataloader")
    if (dm is None) == (dl is None):
        raise TaskRunError(
            f"entry {entry!r} must return exactly one of 'datamodule' and 'train_dataloader'"
        )
    return module, {"datamodule": dm} if dm is not None else {"train_dataloaders": dl}


def _shipped_class(bundle_dir: Path, ref: Mapping[str, Any]) -> Any:
    """Build the class ``ref`` names: a file in the bundle, a module of a shipped package, or an import.

    ``file``: a top-level source file (a script, or a module next to it); ``module``:
    a dotted module whose package the client shipped with its layout; ``import``:
    an installed module. Shipped code imports its shipped siblings, so the bundle
    folder is first on ``sys.path`` while it loads.
    """
    import importlib

    with code_path(bundle_dir):
        if "file" in ref:
            mod = load_code_file(bundle_dir / ref["file"], prefix="_gensyn_code", reuse=True)
        elif "module" in ref:
            mod = import_shipped(bundle_dir, str(ref["module"]))
        else:
            mod = importlib.import_module(ref["import"])
    obj: Any = mod
    for part in str(ref["qualname"]).split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise TaskRunError(f"the shipped code has no class {ref['qualname']!r} ({dict(ref)})")
    return obj(**dict(ref.get("hparams", {})))


def build_shipped(
    bundle_dir: Path,
    module: Mapping[str, Any],
    datamodule: Mapping[str, Any] | None = None,
    loader: Mapping[str, Any] | None = None,
    weights: str = "",
) -> dict[str, Any]:
    """The entry of a task that ``GensynStrategy``'s client role shipped: rebuild module and data.

    ``module`` and ``datamodule`` name a class (``file`` in the bundle or an
    installed ``import``, ``qualname``, ``hparams``); ``weights`` is a safetensors
    file of the module's state when it was sent; ``loader`` is a materialised
    ``TensorDataset`` DataLoader (``file``, ``batch_size``, ``shuffle``, ``drop_last``).
    """
    from safetensors.torch import load_file

    job: dict[str, Any] = {"module": _shipped_class(bundle_dir, module)}
    if weights:
        job["module"].load_state_dict(load_file(str(bundle_dir / weights)))
    if datamodule is not None:
        job["datamodule"] = _shipped_class(bundle_dir, datamodule)
    elif loader is not None:
        from torch.utils.data import DataLoader, TensorDataset

        cols = load_file(str(bundle_dir / loader["file"]))
        ds = TensorDataset(*(cols[f"t{i}"] for i in range(len(cols))))
        job["train_dataloader"] = DataLoader(
            ds, batch_size=int(loader["batch_size"]), shuffle=bool(loader["shuffle"]),
            drop_last=bool(loader["drop_last"]),
        )  # fmt: skip
    return job


def _flavour(module: Any) -> str:
    """``pytorch_lightning`` for its LightningModules, else ``lightning`` (NOTES.md: two packages)."""
    top = {c.__module__.partition(".")[0] for c in type(module).__mro__}
    return "pytorch_lightning" if "pytorch_lightning" in top else "lightning"


def _callback_cls(flavour: str) -> type:
    """The executor's trace callback: the REE callback plus start checkpoints, fresh traces and losses."""
    from contextlib import AbstractContextManager, contextmanager, nullcontext

    from plugins._lightning.checkpoint_io import TREE_KEY
    from plugins._lightning.step_window import fetch_ahead, log_outside_modes, step_tensors
    from plugins._optrace import StepTrace, fault_mode, named_batch, traced_step

    GensynTraceCallback = twins(flavour).GensynTraceCallback  # noqa: N806

    class ExecutorTraceCallback(GensynTraceCallback):  # type: ignore[misc, valid-type]
        """Record the run's trace from its start step, as the torch executor does."""

        def __init__(self, *args: Any, stop_at_start: bool = False,
                     request: RunRequest | None = None, **kwargs: Any) -> None:  # fmt: skip
            super().__init__(*args, **kwargs)
            self.stop_at_start = stop_at_start
            self.request = request
            self.op_trace = StepTrace()  # the traced step's files, or why it has none
            self.losses: list[float] = []
            self.metrics: dict[int, dict[str, float]] = {}
            self.failed_at: int | None = None

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            """Resume the model's state, but start a new trace at the checkpoint's root and step."""
            sd = dict(state_dict)
            tree = sd.get(TREE_KEY)
            if tree is not None:
                t = Trace(commit_interval=self.trace.commit_interval)
                t.start(tree.root, int(sd["step"]))
                sd["trace"] = t.to_json()
            super().load_state_dict(sd)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            """Record the start root and write the start checkpoint."""
            super().on_train_start(trainer, pl_module)
            trainer.save_checkpoint(self.checkpoint_path(self.step), weights_only=False)
            if self.stop_at_start:
                raise _StopAtStart

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            """Keep the step's loss, then record a root if one is due."""
            stepped = self.step != self._steps_at_last_batch_end
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            if stepped and loss is not None:
                value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
                self.losses.append(value)
                self.metrics.setdefault(self.step, {})["loss"] = value

        def step_context(
            self, trainer: Any, batch: Any, batch_idx: int
        ) -> AbstractContextManager[Any] | None:
            """The traced step of an ``op_trace`` request, or an adversary's faulty step; else None."""
            req, step = self.request, self.step + 1
            if req is None:
                return None
            traced = req.op_trace is not None and step == req.end_step
            fault = fault_mode(req, step)
            if not traced and isinstance(fault, nullcontext):
                return None
            # both windows hold the same ops: the later micro-batches are fetched ahead in each
            micro = [batch, *fetch_ahead(trainer)]
            if not traced:
                return self._window(trainer, fault)
            pre = self._capture(trainer)  # references the live tensors, RNG leaves included
            committed = self.trace.roots[-1] if self.trace.steps[-1] == self.step else None
            if pre.root != committed:
                self.op_trace = StepTrace(error=(
                    f"step {step} cannot be traced: the state before it hashes to {pre.root}, "
                    f"not to the committed root {committed} of step {self.step}"))  # fmt: skip
                return None
            batch_tensors = named_batch([step_tensors(b) for b in micro])
            return self._window(trainer, self._traced(req, pre, batch_tensors, step))

        @contextmanager
        def _traced(self, req: RunRequest, pre: Any, batch: Any, step: int) -> Any:
            with traced_step(req, pre, batch, step) as out:
                self.op_trace = out
                yield

        @contextmanager
        def _window(self, trainer: Any, inner: AbstractContextManager[Any]) -> Any:
            with log_outside_modes(trainer.lightning_module), inner:
                yield

        def record(self, metrics: Mapping[str, Any]) -> None:
            """Keep what Lightning sent to the loggers, under the REE step it was logged at."""
            if self.step <= 0:
                return
            row = self.metrics.setdefault(self.step, {})
            for k, v in metrics.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    row[str(k)] = float(v)

    return ExecutorTraceCallback


def _logger(flavour: str, cb: Any) -> Any:
    """A logger that hands every ``log_metrics`` call to ``cb.record`` (what the client's loggers replay)."""
    import importlib

    Logger = importlib.import_module(  # noqa: N806
        "pytorch_lightning.loggers" if flavour == "pytorch_lightning" else "lightning.pytorch.loggers"
    ).Logger

    class StepMetricsLogger(Logger):  # type: ignore[misc, valid-type]
        """Collects the step metrics of the run; writes nothing itself."""

        @property
        def name(self) -> str:
            return "gensyn"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            cb.record(metrics)

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            """Hyperparameters travel in the spec, not in the metrics."""

    return StepMetricsLogger()


def run_lightning(req: RunRequest) -> RunResult:
    """Run ``req`` with a Lightning Trainer under the REE (the task's mode); return its trace and checkpoints."""
    import importlib

    spec = req.spec
    check_ree_mode(spec, "lightning")
    if spec.precision not in _PRECISIONS:
        raise TaskRunError(
            f"the lightning executor runs precision {sorted(_PRECISIONS)}, not {spec.precision!r}"
        )
    if req.end_step < req.start_step:
        raise TaskRunError(f"end_step {req.end_step} is before start_step {req.start_step}")
    if req.op_trace is not None and req.end_step != req.start_step + 1:
        raise TaskRunError(
            f"an op trace covers one step; this request runs {req.start_step}..{req.end_step}"
        )
    root_every = req.root_every or spec.commit_interval
    ckpt_every = req.checkpoint_every or root_every
    if ckpt_every % root_every:
        raise TaskRunError(
            f"checkpoint_every={ckpt_every} must be a multiple of root_every={root_every} "
            "for the lightning executor (checkpoints are written at roots)"
        )
    out = req.out_dir
    out.mkdir(parents=True, exist_ok=True)
    module, data = _load_job(req)
    flavour = _flavour(module)
    pl = importlib.import_module("pytorch_lightning" if flavour == "pytorch_lightning" else "lightning.pytorch")
    # GensynStrategy(role="executor") is this SingleDeviceStrategy with this CheckpointIO and
    # the trace callback; its client role is the face's, which plugins never import.
    strategy = pl.strategies.SingleDeviceStrategy(
        device="cpu", checkpoint_io=twins(flavour).SafetensorsCheckpointIO()
    )
    cb = _callback_cls(flavour)(
        commit_interval=root_every, mode=spec.ree_mode, seed=spec.seed, checkpoint_dir=out,
        stop_at_start=req.end_step == req.start_step, request=req,
    )  # fmt: skip
    trainer = pl.Trainer(
        strategy=strategy,
        callbacks=[cb], max_steps=max(req.end_step, req.start_step + 1), accelerator="cpu", devices=1,
        precision=_PRECISIONS[spec.precision],  # type: ignore[arg-type]
        accumulate_grad_batches=spec.accumulation, gradient_clip_val=spec.clip_norm,
        logger=_logger(flavour, cb), log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )  # fmt: skip
    ckpt = str(req.start_checkpoint) if req.start_checkpoint is not None else None
    try:
        trainer.fit(module, **data, ckpt_path=ckpt)
    except _StopAtStart:
        pass
    except OpTraceError as e:  # the traced step could not be traced: not a failure of the run
        if req.op_trace is None:
            raise
        why = cb.op_trace.error or f"step {req.end_step} cannot be traced: {e}"
        return _untraced(req, cb, ckpt_every, why)
    except Exception as e:  # the user's code failed: a deterministic failure commit
        if not cb.trace.steps:
            raise TaskRunError(f"the task failed before its first step: {e!r}") from e
        write_metrics(out, cb.metrics)
        return failure_result(cb.trace, _checkpoints(out, cb.trace, ckpt_every), cb.step,
                              type(e).__qualname__, traceback.format_exc(), cb.losses)
    trace = cb.trace
    if trace.steps[0] != req.start_step:
        raise TaskRunError(
            f"the start checkpoint is at step {trace.steps[0]}, not {req.start_step}"
        )
    if req.op_trace is not None and cb.op_trace.path is None:
        return _untraced(req, cb, ckpt_every,
                         cb.op_trace.error or f"step {req.end_step} did not run under the tracer")
    trace.final = True
    write_metrics(out, cb.metrics)
    return RunResult(trace, _checkpoints(out, trace, ckpt_every), trace.roots[-1], cb.step,
                     losses=cb.losses, op_trace=cb.op_trace.path,
                     op_inputs=cb.op_trace.inputs)  # fmt: skip


def _untraced(req: RunRequest, cb: Any, ckpt_every: int, why: str) -> RunResult:
    """The result of an ``op_trace`` request whose step could not be traced: its start, and why."""
    trace = cb.trace
    start = [(s, r) for s, r in zip(trace.steps, trace.roots_raw, strict=True)
             if s <= req.start_step]  # fmt: skip
    t = Trace(commit_interval=trace.commit_interval, steps=[s for s, _ in start],
              roots_raw=[r for _, r in start])  # fmt: skip
    return RunResult(t, _checkpoints(req.out_dir, t, ckpt_every), t.roots[-1], req.start_step,
                     op_trace_error=why)  # fmt: skip


def _checkpoints(out: Path, trace: Trace, every: int) -> dict[int, Path]:
    first, last = trace.steps[0], trace.steps[-1]
    found: dict[int, Path] = {}
    for p in sorted(out.glob("step-*.safetensors")):
        s = int(p.stem.removeprefix("step-"))
        if s in (first, last) or s % every == 0:
            found[s] = p
    return found


@hookimpl
def gensyn_execute_task(task: Any, workdir: Path, config: Any) -> RunResult | None:
    """Run a ``framework="lightning"`` RunRequest (DESIGN.md, "Data flow", step 3)."""
    if not isinstance(task, RunRequest) or task.framework != FRAMEWORK:
        return None
    return run_lightning(task)


@hookimpl
def gensyn_verify_interval(
    task: Any, checkpoint: Path, start_step: int, end_step: int, workdir: Path, config: Any
) -> str | None:
    """Re-execute ``start_step..end_step`` of a lightning RunRequest's task from ``checkpoint``; return the end root."""
    return verify_interval(run_lightning, FRAMEWORK, task, checkpoint, start_step, end_step, workdir)
