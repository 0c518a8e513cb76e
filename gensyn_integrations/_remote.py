"""The client role's one road to the network, shared by Lightning, the HF Trainer and Accelerate.

Each integration turns its user's job into a ``TaskSpec`` and the files of a
bundle (source, initial weights, data), then calls :func:`run_remote`. It
posts the task (or re-attaches to ``task_id``), waits for it to settle, and
returns the final REE checkpoint, loaded and checked against the root
committed on chain. A task that fails raises :class:`RemoteTaskError` with the
remote traceback.

With no network configured, :func:`run_remote` starts the embedded devnet for
the call and moves its chain time past the challenge window.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ree import GensynError


class RemoteTaskError(GensynError, RuntimeError):
    """A remote task ended without verified weights; the message carries the remote traceback."""

    def __init__(self, message: str, *, task_id: int, outcome: str, traceback: str = "") -> None:
        super().__init__(message)
        self.task_id, self.outcome, self.traceback = task_id, outcome, traceback


@dataclass
class RemoteResult:
    """What one remote task bought: the chain's receipt and the verified final checkpoint."""

    task_id: int
    receipt: Any  # coordinator.tasks.Receipt
    checkpoint: Any  # ree.Checkpoint, root-checked
    transactions: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        """Optimizer steps the checkpoint has taken."""
        return int(self.checkpoint.tree.leaves["ree/step"])

    def weights(self, prefix: str = "model/") -> dict[str, Any]:
        """The checkpoint's leaves under ``prefix``, keyed without it (a ``state_dict``)."""
        return dict(self.checkpoint.tree.subtree(prefix).items())


def run_remote(
    spec: Any,
    files: Mapping[str, bytes],
    *,
    frameworks: tuple[str, ...],
    timeout: float = 600.0,
    who: str = "GensynStrategy(role='client')",
    on_poll: Callable[[Any, int], None] | None = None,
) -> RemoteResult:
    """Post ``spec`` with ``files`` on the embedded devnet, wait, fetch and check the result.

    ``frameworks``: the ``TaskSpec.framework`` values the devnet's solvers accept.
    ``on_poll(client, task_id)`` runs between polls (progress reporting).
    ``who`` names the caller in error messages.
    """
    import ree
    from coordinator.chain import SlotState
    from coordinator.devnet import devnet
    from coordinator.storage import LocalStore
    from coordinator.tasks import InProcessExecutor, TaskClient
    from gensyn_integrations._manager import get_plugin_manager

    with (
        tempfile.TemporaryDirectory(prefix="gensyn-remote-") as tmp,
        devnet(Path(tmp), solvers=1, verifiers=0, referees=0, frameworks=frameworks) as dn,
    ):
        store = LocalStore(dn.store_path)
        client = TaskClient(dn.protocol, dn.user, store, InProcessExecutor(get_plugin_manager()),
                            workdir=Path(tmp) / "client")  # fmt: skip
        tid = client.submit(spec, files)

        def poll() -> None:
            time.sleep(0.25)
            if on_poll is not None:
                on_poll(client, tid)
            states = [SlotState(dn.protocol.get_slot(tid, i)["state"]) for i in range(spec.replicas)]
            if SlotState.REVEALED in states:  # the embedded chain need not wait out the window
                dn.client.advance_time(spec.challenge_window + 1)

        receipt = client.wait(tid, timeout=timeout, poll=0.25, on_poll=poll)
        if on_poll is not None:
            on_poll(client, tid)
        if receipt.outcome != "verified" or not receipt.final_root:
            tb = client.failure_traceback(tid)[-3000:]
            detail = f":\n{tb}" if tb else ""
            raise RemoteTaskError(
                f"{who}: task {tid} ended {receipt.outcome!r}, with no verified weights{detail}\n"
                f"`gensyn task show {tid}` shows each slot",
                task_id=tid, outcome=receipt.outcome, traceback=tb,
            )  # fmt: skip
        path = client.fetch_result(tid, Path(tmp) / "final.safetensors")
        ck = ree.load_checkpoint(path, expected_root=receipt.final_root)
        txs = list(receipt.transactions or client.transactions.get(tid, []))
        return RemoteResult(tid, receipt, ck, txs)
