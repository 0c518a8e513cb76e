"""The client role of ``GensynTrainer``: ``train()`` on the network, verified weights back.

``train()`` builds the job (:mod:`gensyn_integrations._hf.ship`), posts it through
the shared road (:func:`gensyn_integrations._remote.run_remote`: the embedded
devnet when no network is configured), waits for it to settle, and loads the
final REE checkpoint (checked against the root committed on chain) into
``trainer.model``. ``trainer.state.global_step`` becomes the remote step count
and ``trainer.receipt`` says what was bought. While the task runs, each remote
step's logged numbers (loss, learning rate, grad norm; from the solver's
progress manifests) go through ``trainer.log``, so they reach the Trainer's
callbacks and loggers (``report_to``) and its ``state.log_history``. ``evaluate()`` and ``predict()``
then run here, on those weights.

As with ``GensynStrategy``: ``task_id`` re-attaches to a task already posted
(on a configured network; nothing is shipped, and the task must train this
model's class), ``retries`` posts again a task whose every slot was slashed or
expired, ``config`` picks the network, and ``dry_run`` prices the task and runs
its step 1 in a clean subprocess (:func:`gensyn_integrations._remote.dry_run`)
instead of posting it.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from gensyn_integrations._hf.ship import FRAMEWORK, WHO, build_job
from gensyn_integrations._remote import RemoteReceipt
from gensyn_integrations.errors import ConfigError


@dataclass
class TrainerReceipt(RemoteReceipt):
    """What a remote ``train()`` bought (:class:`RemoteReceipt`), with the remote losses."""

    losses: list[float] = field(default_factory=list)


def _progress(trainer: Any) -> Any:
    """Replay each remote step's metrics through ``trainer.log``: the Trainer's callbacks and loggers."""
    seen: set[int] = set()

    def update(steps_done: int, metrics: Any) -> None:
        for step, row in sorted(metrics.items()):
            if step in seen or not row:
                continue
            seen.add(step)
            trainer.state.global_step = int(step)
            trainer.log({k: float(v) for k, v in row.items()})

    return update


def _posted(trainer: Any) -> Any:
    def posted(tid: int) -> None:
        trainer.task_id_posted = tid
        print(f"gensyn: posted task {tid}; if this process stops, re-attach with "  # noqa: T201
              f"GensynTrainer(..., role='client', task_id={tid}) on the same network",
              file=sys.stderr, flush=True)  # fmt: skip

    return posted


def _model_name(ref: Any) -> str | None:
    cls = dict(ref or {}).get("class") or {}
    return cls.get("transformers") or cls.get("qualname")


def _check_reattach(trainer: Any, spec: Any) -> None:
    want = _model_name(dict(spec.init_args or {}).get("model"))
    have = type(trainer.model).__qualname__
    if spec.framework != FRAMEWORK or want != have:
        raise ConfigError(
            f"task {trainer.task_id} trains {want or spec.framework!r}, not {have}; re-attach "
            "with the model class that posted it", key="task_id", source=WHO,
        )  # fmt: skip


def dry_run_train(trainer: Any) -> Any:
    """Build the job, run its step 1 in a clean subprocess, print the estimate; nothing is posted."""
    from transformers.trainer_utils import TrainOutput

    from gensyn_integrations._remote import dry_run

    spec, files = build_job(trainer)
    est = dry_run(spec, files, timeout=trainer.timeout)
    print(est.describe())  # noqa: T201 - the dry run's whole point is to tell the person
    trainer.estimate = est
    loss = est.first_loss if est.first_loss is not None else math.nan
    return TrainOutput(0, loss, {"train_runtime": round(est.step_seconds, 4), "gensyn_escrow": est.escrow})


def train_remote(trainer: Any) -> Any:
    """Ship, post, wait, fetch, check and load: the whole remote ``train()``; returns a TrainOutput.

    With ``trainer.task_id`` set, nothing is shipped: it re-attaches to that task.
    """
    import torch
    from transformers.trainer_utils import TrainOutput

    from gensyn_integrations._remote import run_remote
    from ree._state import restore_state

    started = time.monotonic()
    spec, files = (None, {}) if trainer.task_id is not None else build_job(trainer)
    res = run_remote(spec, files, frameworks=("torch", FRAMEWORK), timeout=trainer.timeout, who=WHO,
                     config=trainer.config, task_id=trainer.task_id, retries=trainer.retries,
                     on_progress=_progress(trainer), on_posted=_posted(trainer))  # fmt: skip
    if trainer.task_id is not None:
        _check_reattach(trainer, res.spec)
    spec = res.spec
    with torch.no_grad():
        restore_state(res.checkpoint.tree, trainer.model, rng=False)
    steps = res.steps
    trainer.state.global_step = steps
    trainer.state.max_steps = spec.steps
    trainer.receipt = TrainerReceipt(**RemoteReceipt.fields_of(res))
    runtime = time.monotonic() - started
    metrics: dict[str, Any] = {"train_runtime": round(runtime, 4), "gensyn_task_id": res.task_id}
    # per-step metrics come from the solver's progress manifests where the road reports them
    steps_metrics = getattr(res, "metrics", None) or {}
    losses = [float(m["loss"]) for _, m in sorted(steps_metrics.items()) if "loss" in m]
    trainer.receipt.losses = losses
    loss = sum(losses) / len(losses) if losses else math.nan
    metrics["train_loss"] = loss
    return TrainOutput(steps, loss, metrics)
