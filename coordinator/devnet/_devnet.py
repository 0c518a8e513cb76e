"""The embedded devnet: anvil, the contracts, a LocalStore, and solver/verifier/referee processes.

DESIGN.md, "Real parts and how they start": everything on 127.0.0.1, anvil
with ``--block-time 1`` so chain time moves. :func:`devnet` is a context
manager (tests, and [E]'s "no network configured"); ``gensyn devnet`` runs it
until Ctrl-C. Every process it starts is in its own process group and is
killed on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from coordinator.chain import Anvil, ChainClient, Deployment, Protocol, deploy_all, start_anvil
from coordinator.nodes._daemon import KEY_ENV

E18 = 10**18


@dataclass
class NodeProcess:
    """One node daemon this devnet started."""

    role: str
    account: LocalAccount
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM its process group, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


@dataclass
class Devnet:
    """A running devnet: where everything is, and the funded client account."""

    anvil: Anvil
    deployment: Deployment
    deployment_path: Path
    store_path: Path
    root: Path
    client: ChainClient
    protocol: Protocol
    user: LocalAccount
    nodes: list[NodeProcess] = field(default_factory=list)

    @property
    def rpc_url(self) -> str:
        """The chain's JSON-RPC URL."""
        return self.anvil.url

    def status(self) -> list[dict[str, Any]]:
        """One row per node: role, address, pid, alive, stake, credits."""
        rows = []
        for n in self.nodes:
            st = self.protocol.stake_of(n.account.address)
            rows.append({
                "role": n.role, "address": n.account.address, "pid": n.process.pid, "alive": n.alive,
                "staked": st["staked"], "locked": st["locked"],
                "credits": self.protocol.credit(n.account.address), "workdir": str(n.workdir),
            })  # fmt: skip
        return rows

    def stop(self) -> None:
        """Stop every node, then anvil."""
        for n in self.nodes:
            n.stop()
        self.anvil.stop()


def _spawn(role: str, acct: LocalAccount, dn: Devnet, poll: float,
           frameworks: tuple[str, ...] = ("torch",)) -> NodeProcess:  # fmt: skip
    workdir = dn.root / "nodes" / f"{role}-{acct.address[2:10].lower()}"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, KEY_ENV: acct.key.hex()}
    cmd = [sys.executable, "-m", "coordinator.nodes", role, "--rpc", dn.rpc_url,
           "--deployment", str(dn.deployment_path), "--store", str(dn.store_path),
           "--workdir", str(workdir), "--poll", str(poll), "--frameworks", ",".join(frameworks)]  # fmt: skip
    log = (workdir / "stderr.log").open("ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)  # noqa: S603
    log.close()
    return NodeProcess(role, acct, workdir, proc)


@contextlib.contextmanager
def devnet(root: Path, *, solvers: int = 1, verifiers: int = 1, referees: int = 1, port: int | None = None,
           stake: int = 1_000 * E18, fund: int = 100_000 * E18, poll: float = 0.5,
           min_challenge_window: int = 5, move_timeout: int = 60,
           frameworks: tuple[str, ...] = ("torch",)) -> Iterator[Devnet]:  # fmt: skip
    """Start the devnet under ``root``; stop everything it started on exit.

    ``frameworks``: the ``TaskSpec.framework`` values the nodes accept (their
    executor plugins must run them).
    """
    from coordinator.storage import LocalStore

    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    anvil = start_anvil(port=port, block_time=1)
    dn: Devnet | None = None
    try:
        client = ChainClient.connect(anvil.url)
        gov = client.funder
        dep = deploy_all(client, gov)
        p = Protocol(client, dep)
        p.govern(gov, "market", "setMinChallengeWindow", min_challenge_window)
        p.govern(gov, "game", "setTimeouts", move_timeout, move_timeout, move_timeout, move_timeout)
        store = root / "store"
        LocalStore(store)
        user = client.new_account()
        p.mint(gov, user.address, fund)
        dn = Devnet(anvil, dep, dep.write(root / "deployment.json"), store, root, client, p, user)
        for role, n in (("solver", solvers), ("verifier", verifiers), ("referee", referees)):
            for _ in range(n):
                acct = client.new_account()
                p.mint(gov, acct.address, fund)
                p.stake(acct, stake)
                dn.nodes.append(_spawn(role, acct, dn, poll, frameworks))
        yield dn
    finally:
        if dn is not None:
            dn.stop()
        else:
            anvil.stop()
