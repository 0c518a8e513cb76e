"""The Trainer's progress bar and loggers, driven by a remote task's steps.

DESIGN.md, "Data flow", step 7: while the job is remote, the progress bar
advances with the remote steps and shows the loss, and logged metrics reach
the Trainer's loggers. Lightning's own fit loop never runs in the client role,
so nothing calls the bar's or the loggers' hooks; :class:`RemoteProgress` does,
from the metrics the solver publishes in its progress manifests
(:func:`gensyn_integrations._remote.run_remote`'s ``on_progress``).

A step's metrics reach ``logger.log_metrics(metrics, step)`` with the step
Lightning itself would have used (optimizer step - 1), every
``log_every_n_steps`` steps and at the last one, as a local run logs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RemoteProgress:
    """Advances the Trainer's progress bar and feeds its loggers with a remote run's steps."""

    def __init__(self, trainer: Any, model: Any, total: int) -> None:
        """Drive ``trainer``'s progress bar callback (TQDM or Rich, if enabled) and its loggers."""
        self.trainer, self.model, self.total = trainer, model, int(total)
        self.bar: Any = None
        self.rich_task: Any = None
        self.logged_up_to = 0
        self.last: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self, task_id: int | None = None) -> None:
        """Open the bar and log the module's hyperparameters, as a local ``fit`` would."""
        for lg in self.trainer.loggers:
            hp = getattr(self.model, "hparams", None)
            if hp:
                lg.log_hyperparams(hp)
        pb = self.trainer.progress_bar_callback
        if pb is None or not getattr(pb, "is_enabled", False):
            return
        desc = f"Remote task {task_id}" if task_id else "Remote training"
        if hasattr(pb, "init_train_tqdm"):
            self.bar = pb.init_train_tqdm()
            self.bar.reset(total=self.total)
            self.bar.set_description(desc)
            pb.train_progress_bar = self.bar
        elif hasattr(pb, "_init_progress"):  # RichProgressBar
            pb._init_progress(self.trainer)
            self.rich_task = pb.progress.add_task(f"[{pb.theme.description}]{desc}", total=self.total)
            pb.train_progress_bar_id = self.rich_task
            self.bar = pb

    def update(self, steps_done: int, metrics: Mapping[int, Mapping[str, float]]) -> None:
        """Log each new step's metrics, and move the bar to ``steps_done`` with the latest loss."""
        every = max(1, int(getattr(self.trainer, "log_every_n_steps", 1) or 1))
        for step in sorted(metrics):
            row = dict(metrics[step])
            self.last.update(row)
            if step <= self.logged_up_to:
                continue
            self.logged_up_to = step
            if step % every == 0 or step == self.total:
                for lg in self.trainer.loggers:
                    lg.log_metrics(row, step - 1)
        for k, v in self.last.items():
            self.trainer.callback_metrics[k] = _tensor(v)
        self._show(min(steps_done, self.total))

    def close(self, ok: bool) -> None:
        """Flush and finalize the loggers, and close the bar."""
        for lg in self.trainer.loggers:
            lg.save()
            lg.finalize("success" if ok else "failed")
        if self.rich_task is not None:
            self.bar._stop_progress()
        elif self.bar is not None:
            self.bar.close()

    # ------------------------------------------------------------------ the bar

    def _show(self, n: int) -> None:
        shown = {k: v for k, v in self.last.items() if k != "epoch"}
        if self.rich_task is not None:
            self.bar.progress.update(self.rich_task, completed=n)
            if self.bar._metric_component is not None:
                self.bar._metric_component.update(shown)
            self.bar.refresh()
        elif self.bar is not None:
            self.bar.n = n
            self.bar.set_postfix(shown, refresh=False)
            self.bar.refresh()


def _tensor(v: float) -> Any:
    import torch

    return torch.tensor(v)
