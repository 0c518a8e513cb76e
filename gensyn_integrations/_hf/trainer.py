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
        **kwargs: Any,
    ) -> None:
        """Build the Trainer, adding ``GensynCallback(role, commit_interval)`` unless one is given.

        ``policy``, ``budget`` and ``bond`` (token base units), ``challenge_window``
        (seconds of chain time) and ``timeout`` (seconds to wait) apply to the
        task the client role posts.
        """
        self.policy, self.budget, self.bond = policy, budget, bond
        self.challenge_window, self.timeout = challenge_window, timeout
        self.receipt: Any = None
        super().__init__(*args, role=role, commit_interval=commit_interval, **kwargs)

    def train(
        self,
        resume_from_checkpoint: str | bool | os.PathLike[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Train here under the REE (executor), or on the network (client).

        A resumed executor run continues the checkpoint's trace; the checkpoint
        may be a ``checkpoint-N/`` folder or a bare REE checkpoint file.
        """
        if self.role != "client":
            return super().train(resume_from_checkpoint, *args, **kwargs)
        from gensyn_integrations._hf.client import train_remote

        if resume_from_checkpoint not in (None, False):
            raise ConfigError(
                "GensynTrainer(role='client').train() starts the job from the model's current "
                "weights; resume_from_checkpoint is not sent to the network. Load the weights "
                "into the model first, or resume with role='executor'",
                key="resume_from_checkpoint", source="GensynTrainer.train(...)",
            )  # fmt: skip
        return train_remote(self)
