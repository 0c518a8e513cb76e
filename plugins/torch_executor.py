"""The plain-PyTorch executor: an nn.Module, a loss, an optimizer and data, run under the REE.

It implements ``gensyn_execute_task`` for ``framework="torch"``. The task's
entry point (``module:function`` in the bundle's code, or an installed module)
returns the job: a mapping or object with ``model``, ``optimizer``, ``loss``
(``loss(model, batch) -> scalar tensor``), ``dataset`` (indexable, items are
tensors or tuples of tensors) and optionally ``scheduler``. The executor owns
the loop, so every setting that changes the result comes from the TaskSpec:
steps, batch size, accumulation, clipping, precision and seed. Data order is
the REE's keyed permutation; the cursor is part of the state root.

A failure of the user's code at step k is returned as a failure result, not
raised: its last trace leaf is :func:`failure_digest` of k (DESIGN.md,
"Settlement").
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.tasks import RunRequest, RunResult, TaskRunError, failure_digest
from gensyn_integrations.hookspecs import hookimpl
from plugins._code import call_entry
from ree._trace import Trace

__all__ = ["gensyn_execute_task", "gensyn_verify_interval", "run_torch"]


@dataclass
class _Job:
    model: Any
    optimizer: Any
    loss: Any
    dataset: Any
    scheduler: Any = None


def _load_entry(req: RunRequest) -> _Job:
    get = call_entry(req)
    missing = [k for k in ("model", "optimizer", "loss", "dataset") if get(k) is None]
    if missing:
        raise TaskRunError(f"entry {req.spec.entry!r} returned a job without {missing}")
    return _Job(get("model"), get("optimizer"), get("loss"), get("dataset"), get("scheduler"))


class _Cursor:
    """The data cursor: epoch, index in the epoch's keyed permutation, seed."""

    def __init__(self, n: int, seed: int, epoch: int = 0, index: int = 0) -> None:
        import ree

        self.n, self.seed, self.epoch, self.index = n, seed, epoch, index
        self._perm = ree.permutation(n, seed, epoch)

    def take(self, k: int) -> list[int]:
        import ree

        out = []
        for _ in range(k):
            if self.index >= self.n:
                self.epoch, self.index = self.epoch + 1, 0
                self._perm = ree.permutation(self.n, self.seed, self.epoch)
            out.append(int(self._perm[self.index]))
            self.index += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}


def _collate(dataset: Any, idx: list[int], dtype: Any) -> Any:
    import torch

    items = [dataset[i] for i in idx]
    if isinstance(items[0], tuple | list):
        cols = [torch.stack([torch.as_tensor(it[j]) for it in items]) for j in range(len(items[0]))]
        return tuple(c.to(dtype) if c.is_floating_point() else c for c in cols)
    batch = torch.stack([torch.as_tensor(it) for it in items])
    return batch.to(dtype) if batch.is_floating_point() else batch


def _micro_batches(job: _Job, cursor: _Cursor, req: RunRequest, dtype: Any) -> list[Any]:
    """The step's micro-batches, collated before any of them runs (so a trace can name them)."""
    spec = req.spec
    return [_collate(job.dataset, cursor.take(spec.batch_size), dtype)
            for _ in range(spec.accumulation)]  # fmt: skip


def _one_step(job: _Job, batches: list[Any], req: RunRequest) -> float:
    import torch

    spec = req.spec
    job.optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for batch in batches:
        loss = job.loss(job.model, batch)
        if spec.accumulation > 1:
            loss = loss / spec.accumulation
        loss.backward()
        total += float(loss.detach())
    if spec.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), spec.clip_norm)
    job.optimizer.step()
    if job.scheduler is not None:
        job.scheduler.step()
    job.optimizer.zero_grad(set_to_none=True)
    return total


def _perturb(job: _Job) -> None:
    """Adversary hook: nudge the first parameter, the smallest wrong step there is."""
    import torch

    with torch.no_grad():
        next(iter(job.model.parameters())).add_(1e-3)


def run_torch(req: RunRequest) -> RunResult:
    """Run ``req`` under the REE (device mode) and return its trace and checkpoints."""
    import torch

    import ree
    from plugins._optrace import StepTrace, fault_mode, named_batch, traced_step

    spec = req.spec
    if spec.ree_mode != "device":
        raise TaskRunError(
            f"the torch executor runs ree_mode='device'; {spec.ree_mode!r} comes with [D2]"
        )
    root_every = req.root_every or spec.commit_interval
    ckpt_every = req.checkpoint_every or root_every
    dtype = torch.float64 if spec.precision == "fp64" else torch.float32
    out = req.out_dir
    out.mkdir(parents=True, exist_ok=True)
    with ree.deterministic(mode="device", seed=spec.seed):
        job = _load_entry(req)
        job.model.to(dtype)
        cursor = _Cursor(len(job.dataset), spec.seed)
        step = 0
        if req.start_checkpoint is not None:
            ck = ree.load_checkpoint(req.start_checkpoint)
            info = ree.restore_state(ck.tree, job.model, job.optimizer, job.scheduler)
            step = info["step"]
            cursor = _Cursor(len(job.dataset), info["seed"], info["epoch"], info["index"])
        if step != req.start_step:
            raise TaskRunError(f"the start checkpoint is at step {step}, not {req.start_step}")

        def capture() -> Any:
            return ree.capture_state(job.model, job.optimizer, job.scheduler, step=step,
                                     data=cursor.state(), world_size=spec.world_size)  # fmt: skip

        def save(tree: Any) -> None:
            path = out / f"step-{step:08d}.safetensors"
            ree.save_checkpoint(path, tree)
            checkpoints[step] = path

        checkpoints: dict[int, Path] = {}
        tree = capture()
        trace = Trace(commit_interval=root_every)
        trace.start(tree.root_bytes, step)
        save(tree)
        losses: list[float] = []
        if req.op_trace is not None and req.end_step != req.start_step + 1:
            raise TaskRunError(
                f"an op trace covers one step; this request runs {req.start_step}..{req.end_step}"
            )
        op_trace = StepTrace()
        while step < req.end_step:
            try:
                if req.op_trace is not None:  # dispute level 3: this one step, under the tracer
                    pre = capture()  # the agreed state of step k-1, before the batch is drawn
                    batches = _micro_batches(job, cursor, req, dtype)
                    with traced_step(req, pre, named_batch(batches), step + 1) as op_trace:
                        losses.append(_one_step(job, batches, req))
                    if op_trace.error:  # the step stopped part way: nothing else here is usable
                        return RunResult(trace, checkpoints, trace.roots[-1], step, losses=losses,
                                         op_trace_error=op_trace.error)  # fmt: skip
                else:
                    batches = _micro_batches(job, cursor, req, dtype)
                    with fault_mode(req, step + 1):
                        losses.append(_one_step(job, batches, req))
            except Exception as e:  # the user's code failed: a deterministic failure commit
                return _failure(trace, checkpoints, step, e, losses)
            step += 1
            if req.fault.get("perturb_step") == step:
                _perturb(job)
            at_root = step % root_every == 0 or step == req.end_step
            at_ckpt = step % ckpt_every == 0 or step == req.end_step
            if at_root or at_ckpt:
                tree = capture()
                if at_root:
                    if trace.due(step):
                        trace.record(step, tree.root_bytes)
                    else:
                        trace.finish(step, tree.root_bytes)
                if at_ckpt:
                    save(tree)
        trace.final = True
        return RunResult(trace, checkpoints, trace.roots[-1], step, losses=losses,
                         op_trace=op_trace.path, op_inputs=op_trace.inputs)  # fmt: skip


def _failure(trace: Trace, checkpoints: dict[int, Path], done: int, e: Exception,
             losses: list[float]) -> RunResult:  # fmt: skip
    digest = failure_digest(done + 1)
    keep = [(s, r) for s, r in zip(trace.steps, trace.roots_raw, strict=True) if s < done]
    steps = [s for s, _ in keep] + [done]
    roots = [r for _, r in keep] + [bytes.fromhex(digest)]
    t = Trace(commit_interval=trace.commit_interval, steps=steps, roots_raw=roots, final=True)
    return RunResult(t, checkpoints, digest, done, failed=True, error_type=type(e).__qualname__,
                     error_digest=digest, traceback=traceback.format_exc(), losses=losses)  # fmt: skip


@hookimpl
def gensyn_execute_task(task: Any, workdir: Path, config: Any) -> RunResult | None:
    """Run a ``framework="torch"`` RunRequest (DESIGN.md, "Data flow", step 3)."""
    if not isinstance(task, RunRequest) or task.framework != "torch":
        return None
    return run_torch(task)


@hookimpl
def gensyn_verify_interval(
    task: Any, checkpoint: Path, start_step: int, end_step: int, workdir: Path, config: Any
) -> str | None:
    """Re-execute ``start_step..end_step`` of a torch RunRequest's task from ``checkpoint``; return the end root."""
    if not isinstance(task, RunRequest) or task.framework != "torch":
        return None
    req = RunRequest(task.spec, task.bundle_dir, workdir, start_checkpoint=checkpoint,
                     start_step=start_step, end_step=end_step)  # fmt: skip
    res = run_torch(req)
    return res.error_digest if res.failed else res.final_root
