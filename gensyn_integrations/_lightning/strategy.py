"""``GensynStrategy``: the Lightning strategy of gensyn-integrations.

Two roles:

* ``role="executor"`` trains here, under the REE, and records the trace: the
  strategy brings its own :class:`GensynTraceCallback` (unless the Trainer
  already has one) and saves checkpoints through ``SafetensorsCheckpointIO``.
  Solvers run tasks this way, and so can users who want to prove their own run.
* ``role="client"`` (the default) sends ``fit`` to the network through a
  launcher, the seam ``ddp_spawn`` uses (NOTES.md); see
  :mod:`gensyn_integrations._lightning.client`. ``strategy.receipt`` holds the
  outcome. With no network configured it starts the embedded devnet for the call.
  ``task_id=N`` re-attaches to a task already posted (a configured network);
  ``dry_run=True`` runs step 1 in a clean subprocess and sets ``strategy.estimate``.

Both are thin subclasses of ``SingleDeviceStrategy``: the network, not
torch.distributed, does the communication.
"""

from __future__ import annotations

import os
from typing import Any

from gensyn_integrations.errors import ConfigError

ROLES = ("client", "executor")


class GensynStrategyMixin:
    """The behaviour of ``GensynStrategy``; mixed into each Lightning's ``SingleDeviceStrategy``."""

    strategy_name = "gensyn"
    _callback_cls: type
    _checkpoint_io_cls: type

    def __init__(
        self,
        role: str = "client",
        *,
        commit_interval: int = 10,
        mode: str = "device",
        seed: int = 0,
        threads: int | None = 1,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        device: str = "cpu",
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
        """Choose the role; the REE settings apply to the trace, the rest to the client's task.

        ``policy``, ``budget`` and ``bond`` (token base units), ``challenge_window``
        (seconds of chain time) and ``timeout`` (seconds to wait) apply to the
        task the client role posts. ``retries``: post again when every slot was
        slashed or expired (the refund stays market credit: ``gensyn withdraw``).
        ``task_id``: re-attach to that task instead of posting (needs a configured
        network). ``dry_run``: price the task and run its first step here, paying
        nothing. ``config``: a ``GensynConfig`` (None reads gensyn.yaml and
        ``GENSYN_*``); its ``network.rpc_url`` picks the network.
        """
        if role not in ROLES:
            raise ConfigError(
                f"GensynStrategy(role={role!r}) is not a role; use one of {ROLES}",
                key="role", source="GensynStrategy(...)", suggestion="executor",
            )
        kwargs.setdefault("checkpoint_io", self._checkpoint_io_cls())
        super().__init__(device=device, **kwargs)  # type: ignore[call-arg]
        self.role = role
        self.commit_interval, self.mode, self.seed = commit_interval, mode, seed
        self.policy, self.budget, self.bond = policy, budget, bond
        self.challenge_window, self.timeout = challenge_window, timeout
        if retries < 0:
            raise ConfigError(f"GensynStrategy(retries={retries!r}) must be 0 or more",
                              key="retries", source="GensynStrategy(...)")  # fmt: skip
        if task_id is not None and dry_run:
            raise ConfigError("GensynStrategy(task_id=..., dry_run=True): a dry run prices a new task; "
                              "drop one of them", key="dry_run", source="GensynStrategy(...)")  # fmt: skip
        self.retries, self.task_id, self.dry_run, self.config = retries, task_id, dry_run, config
        self.task_id_posted: int | None = None  # set as soon as the task is on chain
        self.receipt: Any = None
        self.estimate: Any = None
        self._trace_callback = self._callback_cls(
            commit_interval=commit_interval, mode=mode, seed=seed, threads=threads,
            checkpoint_dir=checkpoint_dir,
        )

    @property
    def trace_callback(self) -> Any:
        """The :class:`GensynTraceCallback` that records this run (the Trainer's own, if it had one)."""
        return self._trace_callback

    @property
    def trace(self) -> Any:
        """The run's :class:`ree.Trace`: ``.roots``, ``.root``, ``.n``."""
        return self._trace_callback.trace

    def _configure_launcher(self) -> None:
        """The client role's launcher sends ``fit`` to the network (NOTES.md: the launcher seam)."""
        if self.role == "client":
            from gensyn_integrations._lightning.client import ClientLauncher

            self._launcher = ClientLauncher(self)

    def setup_environment(self) -> None:
        """Attach the trace callback before Lightning calls the callbacks' ``setup``."""
        super().setup_environment()  # type: ignore[misc]
        if self.role == "client":
            return  # validate/test/predict run here on the returned weights, untraced
        trainer = self.lightning_module.trainer  # type: ignore[attr-defined]
        mine = [cb for cb in trainer.callbacks if isinstance(cb, self._callback_cls)]
        if mine:
            self._trace_callback = mine[0]
        else:
            trainer.callbacks.append(self._trace_callback)
