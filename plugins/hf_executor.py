"""The Transformers executor: a model and its data, trained by ``GensynTrainer`` under the REE.

It implements ``gensyn_execute_task`` and ``gensyn_verify_interval`` for
``framework="transformers"``. The task's entry point (``module:function`` in the
bundle's code, or an installed module; :func:`build_shipped` for what
``GensynTrainer(role="client")`` ships) returns a mapping or object with:

* ``model``: a ``torch.nn.Module`` the Trainer accepts (a ``PreTrainedModel``);
* ``train_dataset``: a map-style dataset of dict examples;
* ``args`` (optional): ``TrainingArguments`` keyword arguments that change the
  result (learning rate, optimizer, scheduler...). Steps, batch size,
  accumulation, clipping and seed come from the TaskSpec itself;
* ``data_collator`` (optional) and ``threads`` (optional, default 1).

The run is the ``GensynTrainer(role="executor")`` a user runs locally (its
executor part, :class:`plugins._hf.trainer.ExecutorTrainer`), so
the remote trace equals the local one bit for bit in device mode. The
scheduler is always built for ``spec.steps``; a run that ends earlier
(``end_step``: a solver's segment, a verifier's interval, a referee's step) is
stopped by a callback, and one that starts later resumes from the bare REE
checkpoint (``GensynTrainer.train(resume_from_checkpoint=<.safetensors>)``).

Each step's logged numbers (loss, learning rate, grad norm) are written beside
the checkpoints as :data:`coordinator.tasks._results.METRICS_FILE`, so the
solver's manifests carry them to the client's logs.

The RunResult contract is the torch executor's: a trace covering
``start_step..steps_done`` with a root every ``root_every`` steps and one at the
end, a checkpoint at ``start_step``, every ``checkpoint_every`` steps and at the
end, and a failure commit (:func:`coordinator.tasks.failure_digest`) when the
user's code raises.

Layering note: transformers and the executor ``Trainer`` (:mod:`plugins._hf`,
the same class ``GensynTrainer`` extends with its client role) are imported
when a task runs, never when the plugin is registered.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordinator.tasks import RunRequest, RunResult, TaskRunError
from coordinator.tasks._results import write_metrics
from gensyn_integrations.hookspecs import hookimpl
from plugins._code import call_entry, load_code_file
from plugins._runs import check_ree_mode, failure_result, verify_interval

__all__ = ["FRAMEWORK", "build_shipped", "gensyn_execute_task", "gensyn_verify_interval",
           "run_transformers"]  # fmt: skip

FRAMEWORK = "transformers"
# Settings of this machine, not of the task: no evaluation, no Trainer checkpoints
# (the REE checkpoints are written by _RunControl), a loss logged every step.
_FIXED_ARGS: dict[str, Any] = {
    "use_cpu": True, "report_to": "none", "save_strategy": "no", "eval_strategy": "no",
    "logging_strategy": "steps", "logging_steps": 1, "disable_tqdm": True,
    "dataloader_num_workers": 0,
}  # fmt: skip


class _StopAtStart(Exception):  # noqa: N818 - control flow, never shown to a user
    """Raised after the initial checkpoint of an ``end_step == start_step`` run is written."""


# ---------------------------------------------------------------------- the shipped job


class ShippedDataset:
    """The examples a client materialised: safetensors columns, given back as the original types."""

    def __init__(self, columns: Mapping[str, Any], kinds: list[tuple[str, str]], n: int) -> None:
        """``kinds``: ``(field, kind)`` in example order; kind is tensor, numpy, int, bool, float or list."""
        self.columns, self.kinds, self.n = dict(columns), list(kinds), int(n)
        for k, _ in self.kinds:
            if k not in self.columns or self.columns[k].shape[0] != self.n:
                raise TaskRunError(f"the shipped dataset has no column {k!r} of {self.n} rows")

    def __len__(self) -> int:
        """The number of examples."""
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Example ``i``, with each field's original type."""
        out: dict[str, Any] = {}
        for k, kind in self.kinds:
            v = self.columns[k][int(i)]
            if kind == "tensor":
                out[k] = v.clone()
            elif kind == "numpy":
                out[k] = v.numpy().copy()
            elif kind == "int":
                out[k] = int(v)
            elif kind == "bool":
                out[k] = bool(v)
            elif kind == "float":
                out[k] = float(v)
            else:
                out[k] = v.tolist()
        return out


def _shipped_class(bundle_dir: Path, ref: Mapping[str, Any]) -> Any:
    if "transformers" in ref:
        import transformers

        cls = getattr(transformers, str(ref["transformers"]), None)
        if cls is None:
            raise TaskRunError(f"transformers has no class {ref['transformers']!r} here")
        return cls
    mod = load_code_file(bundle_dir / str(ref["file"]), prefix="_gensyn_code", reuse=True)
    obj: Any = mod
    for part in str(ref["qualname"]).split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise TaskRunError(f"the shipped code has no class {ref['qualname']!r} ({dict(ref)})")
    return obj


def build_shipped(
    bundle_dir: Path,
    model: Mapping[str, Any],
    dataset: Mapping[str, Any],
    weights: str = "",
    args: Mapping[str, Any] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The entry of a task that ``GensynTrainer(role="client")`` shipped: rebuild model and data.

    ``model``: ``class`` and ``config_class`` (a ``transformers`` name, or
    ``file`` + ``qualname`` in the bundle), ``config`` (``to_dict()``) and
    ``attn_implementation``; ``weights``: a safetensors file of its state when it
    was sent; ``dataset``: the materialised examples (``file``, ``n``, ``columns``).
    """
    import torch
    from safetensors.torch import load_file

    cfg_cls = _shipped_class(bundle_dir, model["config_class"])
    config = cfg_cls.from_dict(dict(model["config"]))
    if model.get("attn_implementation"):
        config._attn_implementation = model["attn_implementation"]
    net = _shipped_class(bundle_dir, model["class"])(config)
    if weights:
        state = load_file(str(bundle_dir / weights))
        dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
        if dtypes == {torch.float64}:
            net = net.double()
        with torch.no_grad():
            net.load_state_dict(state)
    cols = load_file(str(bundle_dir / str(dataset["file"])))
    kinds = [(str(k), str(kind)) for k, kind in dataset["columns"]]
    return {"model": net, "train_dataset": ShippedDataset(cols, kinds, int(dataset["n"])),
            "args": dict(args or {}), "threads": int(threads)}  # fmt: skip


# ---------------------------------------------------------------------- the run


def _control_cls() -> type:
    """A callback after ``GensynCallback``: REE checkpoints, losses, and the stop at ``end_step``."""
    from transformers import TrainerCallback

    from ree._checkpoint import save_checkpoint

    class RunControl(TrainerCallback):  # type: ignore[misc]
        """Writes the run's REE checkpoints and stops it at ``end_step``."""

        def __init__(self, gensyn: Any, out: Path, end_step: int, every: int) -> None:
            self.gensyn, self.out, self.end_step, self.every = gensyn, out, end_step, every
            self.losses: list[float] = []
            self.metrics: dict[int, dict[str, float]] = {}
            self.written: dict[int, Path] = {}

        def _save(self, global_step: int) -> None:
            cb = self.gensyn
            path = self.out / f"step-{cb.step:08d}.safetensors"
            save_checkpoint(path, cb.capture(), extra={"cursor": dict(cb.cursor),
                            "transformers": {"global_step": int(global_step)}})  # fmt: skip
            self.written[cb.step] = path

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            """Write the start checkpoint (GensynCallback has restored the state by now)."""
            self._save(state.global_step)
            if self.gensyn.step >= self.end_step:
                self.gensyn.on_train_end(args, state, control)  # closes the trace, undoes the REE
                raise _StopAtStart

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            """Write a checkpoint when one is due, and stop at ``end_step``."""
            step = self.gensyn.step
            if step % self.every == 0 or step >= self.end_step:
                self._save(state.global_step)
            if step >= self.end_step:
                control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            """Keep each step's training loss, and its other logged numbers for the sidecar."""
            if not logs or "loss" not in logs:
                return  # the summary at the end of train() ("train_loss", runtime...)
            self.losses.append(float(logs["loss"]))
            row = self.metrics.setdefault(self.gensyn.step, {})
            for k, v in logs.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch":
                    row[str(k)] = float(v)
            write_metrics(self.out, self.metrics)

    return RunControl


def run_transformers(req: RunRequest) -> RunResult:
    """Run ``req`` with ``GensynTrainer`` under the REE (the task's mode); return its trace and checkpoints."""
    spec = req.spec
    check_ree_mode(spec, "transformers")
    if spec.precision not in ("fp32", "fp64"):
        raise TaskRunError(f"the transformers executor runs fp32 or fp64, not {spec.precision!r}")
    if req.end_step < req.start_step:
        raise TaskRunError(f"end_step {req.end_step} is before start_step {req.start_step}")
    if req.end_step > spec.steps:
        raise TaskRunError(f"end_step {req.end_step} is past the task's {spec.steps} steps")
    root_every = req.root_every or spec.commit_interval
    ckpt_every = req.checkpoint_every or root_every
    out = req.out_dir
    out.mkdir(parents=True, exist_ok=True)
    scope = _step_scope(req)
    get = call_entry(req)
    model, dataset = get("model"), get("train_dataset")
    if model is None or dataset is None:
        raise TaskRunError(f"entry {spec.entry!r} must return 'model' and 'train_dataset'")
    trainer, gensyn, ctl = _trainer(req, model, dataset, get, root_every, ckpt_every)
    gensyn.step_hook = scope
    try:
        trainer.train(
            resume_from_checkpoint=str(req.start_checkpoint) if req.start_checkpoint else None
        )
    except _StopAtStart:
        pass
    except Exception as e:  # the user's code failed: a deterministic failure commit
        gensyn.release(e)
        if not gensyn.trace.steps:
            raise TaskRunError(f"the task failed before its first step: {e!r}") from e
        if scope is not None and scope.traced.error:  # the step stopped part way: no trace
            return RunResult(gensyn.trace, dict(ctl.written), gensyn.trace.roots[-1], gensyn.step,
                             losses=ctl.losses, op_trace_error=scope.traced.error)  # fmt: skip
        return failure_result(gensyn.trace, ctl.written, gensyn.step, type(e).__qualname__,
                              traceback.format_exc(), ctl.losses)
    trace = gensyn.trace
    if trace.steps[0] != req.start_step:
        raise TaskRunError(
            f"the start checkpoint is at step {trace.steps[0]}, not {req.start_step}"
        )
    if not trace.final:
        trace.finish(gensyn.step, gensyn.capture().root)
    res = RunResult(trace, dict(ctl.written), trace.roots[-1], gensyn.step, losses=ctl.losses)
    if req.op_trace is not None and scope is not None:
        traced = scope.finish()
        res.op_trace, res.op_inputs, res.op_trace_error = traced.path, traced.inputs, traced.error
    return res


def _step_scope(req: RunRequest) -> Any:
    """The dispute tracer of a traced step, or a test adversary's fault; None for a plain run."""
    if req.op_trace is None and not req.fault:
        return None
    if req.op_trace is not None and req.end_step != req.start_step + 1:
        raise TaskRunError(
            f"an op trace covers one step; this request runs {req.start_step}..{req.end_step}"
        )
    from plugins._hf.steps import StepScope

    return StepScope(req)


def _trainer(req: RunRequest, model: Any, dataset: Any, get: Any, root_every: int,
             ckpt_every: int) -> tuple[Any, Any, Any]:  # fmt: skip
    from transformers import TrainingArguments
    from transformers.data.data_collator import default_data_collator
    from transformers.trainer_callback import PrinterCallback

    from plugins._hf.callback import GensynCallback
    from plugins._hf.trainer import ExecutorTrainer

    spec = req.spec
    extra = dict(get("args") or {})
    clash = sorted(set(extra) & {"output_dir", "max_steps", "per_device_train_batch_size", "seed",
                                 "gradient_accumulation_steps", "max_grad_norm", *_FIXED_ARGS})  # fmt: skip
    if clash:
        raise TaskRunError(f"entry {spec.entry!r} sets {clash} in 'args'; the TaskSpec and the "
                           "executor set them")  # fmt: skip
    args = TrainingArguments(
        output_dir=str(req.out_dir / "hf"), max_steps=spec.steps, seed=spec.seed,
        per_device_train_batch_size=spec.batch_size, gradient_accumulation_steps=spec.accumulation,
        max_grad_norm=spec.clip_norm or 0.0, **_FIXED_ARGS, **extra,
    )  # fmt: skip
    gensyn = GensynCallback(role="executor", commit_interval=root_every, mode=spec.ree_mode,
                            seed=spec.seed, threads=int(get("threads") or 1))  # fmt: skip
    ctl = _control_cls()(gensyn, req.out_dir, req.end_step, ckpt_every)
    trainer = ExecutorTrainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=get("data_collator") or default_data_collator, callbacks=[gensyn, ctl],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # the losses travel in the RunResult, not on stdout
    return trainer, gensyn, ctl


@hookimpl
def gensyn_execute_task(task: Any, workdir: Path, config: Any) -> RunResult | None:
    """Run a ``framework="transformers"`` RunRequest (DESIGN.md, "Data flow", step 3)."""
    if not isinstance(task, RunRequest) or task.framework != FRAMEWORK:
        return None
    return run_transformers(task)


@hookimpl
def gensyn_verify_interval(
    task: Any, checkpoint: Path, start_step: int, end_step: int, workdir: Path, config: Any
) -> str | None:
    """Re-execute ``start_step..end_step`` of a transformers task from ``checkpoint``; return the end root."""
    return verify_interval(run_transformers, FRAMEWORK, task, checkpoint, start_step, end_step, workdir)
