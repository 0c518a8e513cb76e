"""A node as a long-running process: ``python -m coordinator.nodes ROLE ...``.

The private key comes from the environment (``GENSYN_NODE_KEY``), never from
the command line, where other users could read it. Task code runs in a child
process per run, in the sandbox (:class:`coordinator.sandbox.SandboxedExecutor`:
the task user, only ``lo``, rlimits, a scratch folder) wherever this process
can build one (root on Linux), else in a plain child process
(:class:`coordinator.tasks.SubprocessExecutor`, with a warning). SIGTERM and
SIGINT stop the loop after the current tick; the state on disk lets the next
start carry on, and it withdraws pending credits first.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordinator.nodes._base import Node
from coordinator.nodes._referee import Referee
from coordinator.nodes._solver import Solver
from coordinator.nodes._verifier import Verifier

ROLES: dict[str, type[Node]] = {"solver": Solver, "verifier": Verifier, "referee": Referee}
KEY_ENV = "GENSYN_NODE_KEY"


SANDBOX_CHOICES = ("auto", "on", "off")


def task_executor(sandbox: str = "auto") -> tuple[Any, str]:
    """The executor a node runs task code with, and a line saying which and why.

    ``on``: the sandbox, or an error saying why this machine cannot build one;
    ``off``: a plain child process; ``auto``: the sandbox where it can be built.
    """
    from coordinator.sandbox import SandboxedExecutor, SandboxSetupError
    from coordinator.sandbox._sandbox import Sandbox
    from coordinator.tasks import SubprocessExecutor

    if sandbox not in SANDBOX_CHOICES:
        raise ValueError(f"sandbox must be one of {SANDBOX_CHOICES}, not {sandbox!r}")
    if sandbox == "off":
        return SubprocessExecutor(), "task code runs in a child process WITHOUT the sandbox (--sandbox off)"
    try:
        Sandbox().prepare()
    except SandboxSetupError as e:
        if sandbox == "on":
            raise
        return SubprocessExecutor(), f"WARNING: task code runs without the sandbox: {e}"
    return SandboxedExecutor(), "task code runs in the sandbox (task user, only lo, rlimits)"


def build_node(role: str, rpc_url: str, deployment: Path, key: str, store: Path, workdir: Path,
               executor: Any = None, frameworks: tuple[str, ...] = ("torch",),
               sandbox: str = "auto") -> Node:  # fmt: skip
    """Connect to the chain and the store, and make the node of ``role`` (running ``frameworks``)."""
    from eth_account import Account

    from coordinator.chain import ChainClient, Deployment, Protocol
    from coordinator.storage import LocalStore

    client = ChainClient.connect(rpc_url)
    p = Protocol(client, Deployment.read(deployment))
    how = "task code runs in the executor given"
    if executor is None:
        executor, how = task_executor(sandbox)
    node = ROLES[role](
        p, Account.from_key(key), LocalStore(store), executor, workdir, frameworks=frameworks
    )
    node.log(how)
    return node


def run_forever(node: Node, *, poll: float = 1.0) -> None:
    """Tick until SIGTERM or SIGINT; write the log's CID to ``workdir/log.cid`` on the way out."""
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop:
        if not node.tick():
            time.sleep(poll)
    (node.workdir / "log.cid").write_text(node.upload_logs())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m coordinator.nodes``."""
    ap = argparse.ArgumentParser(prog="python -m coordinator.nodes", description=__doc__)
    ap.add_argument("role", choices=sorted(ROLES))
    ap.add_argument("--rpc", required=True)
    ap.add_argument("--deployment", type=Path, required=True)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--frameworks", default="torch",
                    help="comma-separated TaskSpec.framework values to accept (default torch)")  # fmt: skip
    ap.add_argument("--sandbox", choices=SANDBOX_CHOICES, default="auto",
                    help="run task code in the sandbox: auto (where it can be built: root on "
                         "Linux), on (or fail), off (default auto)")  # fmt: skip
    a = ap.parse_args(argv)
    key = os.environ.get(KEY_ENV)
    if not key:
        print(f"error: set {KEY_ENV} to the node's private key", file=sys.stderr)
        return 2
    frameworks = tuple(f for f in a.frameworks.split(",") if f)
    node = build_node(a.role, a.rpc, a.deployment, key, a.store, a.workdir, frameworks=frameworks,
                      sandbox=a.sandbox)  # fmt: skip
    run_forever(node, poll=a.poll)
    return 0
