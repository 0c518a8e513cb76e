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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from gensyn_integrations._hf.ship import FRAMEWORK, WHO, build_job


@dataclass
class TrainerReceipt:
    """What a remote ``train()`` bought: ids, transactions, CIDs, the verified root, cost and solvers."""

    task_id: int
    transactions: list[str]
    spec_cid: str
    manifest_cids: list[str]
    result_cids: list[str]
    final_root: str
    verified: bool
    outcome: str
    cost: int
    fee_burned: int
    solvers: list[str]
    steps: int = 0
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


def train_remote(trainer: Any) -> Any:
    """Ship, post, wait, fetch, check and load: the whole remote ``train()``; returns a TrainOutput."""
    import torch
    from transformers.trainer_utils import TrainOutput

    from gensyn_integrations._remote import run_remote
    from ree._state import restore_state

    started = time.monotonic()
    spec, files = build_job(trainer)
    res = run_remote(spec, files, frameworks=("torch", FRAMEWORK), timeout=trainer.timeout, who=WHO,
                     on_progress=_progress(trainer))  # fmt: skip
    with torch.no_grad():
        restore_state(res.checkpoint.tree, trainer.model, rng=False)
    steps = res.steps
    trainer.state.global_step = steps
    trainer.state.max_steps = spec.steps
    r = res.receipt
    trainer.receipt = TrainerReceipt(
        task_id=res.task_id, transactions=res.transactions, spec_cid=r.spec_cid,
        manifest_cids=[s.manifest_cid for s in r.slots], result_cids=[s.result_cid for s in r.slots],
        final_root=r.final_root, verified=True, outcome=r.outcome, cost=r.paid + r.fee_burned,
        fee_burned=r.fee_burned, solvers=[s.solver for s in r.slots], steps=steps,
    )  # fmt: skip
    runtime = time.monotonic() - started
    metrics: dict[str, Any] = {"train_runtime": round(runtime, 4), "gensyn_task_id": res.task_id}
    # per-step metrics come from the solver's progress manifests where the road reports them
    steps_metrics = getattr(res, "metrics", None) or {}
    losses = [float(m["loss"]) for _, m in sorted(steps_metrics.items()) if "loss" in m]
    trainer.receipt.losses = losses
    loss = sum(losses) / len(losses) if losses else math.nan
    metrics["train_loss"] = loss
    return TrainOutput(steps, loss, metrics)
