"""``GensynTrainer``: the executor's ``Trainer`` plus the client role, which sends ``train()`` away.

The training under the REE lives in :class:`plugins._hf.trainer.ExecutorTrainer`,
the class a solver runs (DESIGN.md, "Layers": the plugins never import the
face). This subclass adds what only a client does (DESIGN.md, "Framework
submodules"): ``train()`` sent to the network (:mod:`gensyn_integrations._hf.client`)
and the settings of the task it posts. A script written against it runs
unchanged on the client and on a solver.
"""

from __future__ import annotations

import os
from typing import Any

from gensyn_integrations.errors import ConfigError
from plugins._hf.trainer import ExecutorTrainer


class GensynTrainer(ExecutorTrainer):
    """A ``Trainer`` that records its trace under the REE, or sends ``train()`` to the network.

    ``role="executor"`` (the default) trains here under the REE and records the
    trace. ``role="client"`` (or a ``GensynCallback(role="client")`` among the
    callbacks) makes ``train()`` ship the job to the network, wait for the
    verified result and load its weights into ``self.model``; :attr:`receipt`
    then says what was bought. ``evaluate()`` and ``predict()`` run here.
    """

    _offers_client = True

    def __init__(
        self,
        *args: Any,
        role: str | None = None,
        commit_interval: int | None = None,
        policy: str = "replicate:1",
        budget: int = 10**18,
        bond: int = 10**17,
        challenge_window: int = 5,
        timeout: float = 600.0,
        retries: int = 0,
        task_id: int | None = None,
        dry_run: bool = False,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the Trainer, adding ``GensynCallback(role, commit_interval)`` unless one is given.

        ``policy``, ``budget`` and ``bond`` (token base units), ``challenge_window``
        (seconds of chain time) and ``timeout`` (seconds to wait) apply to the
        task the client role posts. ``retries``: post again when every slot was
        slashed or expired (the refund stays market credit: ``gensyn withdraw``).
        ``task_id``: re-attach to that task instead of posting (needs a configured
        network). ``dry_run``: price the task and run its first step here in a
        clean subprocess, paying nothing (:attr:`estimate`). ``config``: a
        ``GensynConfig`` (None reads gensyn.yaml and ``GENSYN_*``); its
        ``network.rpc_url`` picks the network. All of these are the client role's
        (the same as ``GensynStrategy``'s).
        """
        if retries < 0:
            raise ConfigError(f"GensynTrainer(retries={retries!r}) must be 0 or more",
                              key="retries", source="GensynTrainer(...)")  # fmt: skip
        if task_id is not None and dry_run:
            raise ConfigError("GensynTrainer(task_id=..., dry_run=True): a dry run prices a new task; "
                              "drop one of them", key="dry_run", source="GensynTrainer(...)")  # fmt: skip
        self.policy, self.budget, self.bond = policy, budget, bond
        self.challenge_window, self.timeout = challenge_window, timeout
        self.retries, self.task_id, self.dry_run, self.config = retries, task_id, dry_run, config
        self.task_id_posted: int | None = None  # set as soon as the task is on chain
        self.receipt: Any = None
        self.estimate: Any = None
        super().__init__(*args, role=role, commit_interval=commit_interval, **kwargs)
        if self.role != "client" and (task_id is not None or dry_run or retries):
            raise ConfigError(
                "GensynTrainer(task_id=, retries=, dry_run=) are settings of the client role's task; "
                "this trainer trains here (role='executor'). Pass role='client'",
                key="role", source="GensynTrainer(...)",
            )  # fmt: skip

    def train(
        self,
        resume_from_checkpoint: str | bool | os.PathLike[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Train here under the REE (executor), or on the network (client; a dry run prices it).

        A resumed executor run continues the checkpoint's trace; the checkpoint
        may be a ``checkpoint-N/`` folder or a bare REE checkpoint file.
        """
        if self.role != "client":
            return super().train(resume_from_checkpoint, *args, **kwargs)
        from gensyn_integrations._hf.client import dry_run_train, train_remote

        if resume_from_checkpoint not in (None, False):
            raise ConfigError(
                "GensynTrainer(role='client').train() starts the job from the model's current "
                "weights; resume_from_checkpoint is not sent to the network. Load the weights "
                "into the model first, or resume with role='executor'",
                key="resume_from_checkpoint", source="GensynTrainer.train(...)",
            )  # fmt: skip
        return dry_run_train(self) if self.dry_run else train_remote(self)
