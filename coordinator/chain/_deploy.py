"""Deploying the protocol, and the chain-only devnet.

The CLI's ``gensyn contracts deploy --rpc URL`` calls :func:`deploy_all` and
writes the :class:`Deployment` file; ``gensyn devnet --chain-only`` calls
:func:`run_chain_only_devnet`, which starts anvil with ``--block-time 1`` so
chain time moves (NOTES.md, "anvil only mines when a transaction arrives").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from coordinator.chain._artifacts import load_artifact
from coordinator.chain._client import ChainClient
from coordinator.chain._errors import ChainConfigError
from coordinator.chain._protocol import Protocol
from coordinator.chain._types import Deployment

REPO = Path(__file__).resolve().parents[2]
ANVIL_BIN = REPO / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def deploy_all(
    client: ChainClient, deployer: LocalAccount, *, governance: str | None = None
) -> Deployment:
    """Deploy token, staking, market and dispute game, and wire them; governance defaults to the deployer.

    The deployer wires the contracts while it is still governance, then hands
    governance over if another address was named.
    """
    start = client.block_number()
    me = deployer.address
    token = client.deploy(deployer, load_artifact("AIToken"), me)
    staking = client.deploy(deployer, load_artifact("Staking"), token.address, me)
    market = client.deploy(
        deployer, load_artifact("TaskMarket"), token.address, staking.address, me
    )
    game = client.deploy(
        deployer, load_artifact("DisputeGame"), staking.address, market.address, me
    )
    client.transact(deployer, staking.functions.wire(market.address, game.address), "wire staking")
    client.transact(deployer, market.functions.wire(game.address), "wire market")
    gov = governance or me
    if gov != me:
        for c in (token, staking, market, game):
            client.transact(deployer, c.functions.transferGovernance(gov), "transfer governance")
    return Deployment(
        chain_id=client.chain_id, token=token.address, staking=staking.address,
        market=market.address, game=game.address, governance=gov, deployer=me, block=start,
    )  # fmt: skip


def deploy_to_rpc(rpc_url: str, out: str | Path, *, deployer_key: str | None = None,
                  governance: str | None = None) -> Deployment:  # fmt: skip
    """``gensyn contracts deploy --rpc URL``: deploy and write the deployment file at ``out``.

    The key comes from ``deployer_key`` or ``GENSYN_DEPLOYER_KEY``; on anvil
    (chain id 31337) it defaults to the first dev key.
    """
    key = deployer_key or os.environ.get("GENSYN_DEPLOYER_KEY")
    client = ChainClient.connect(rpc_url, funder_key=key)
    deployer = client.funder if key is None else _account(key)
    dep = deploy_all(client, deployer, governance=governance)
    dep.write(out)
    return dep


def _account(key: str) -> LocalAccount:
    from eth_account import Account

    try:
        return Account.from_key(key)  # type: ignore[no-any-return]
    except Exception as exc:
        raise ChainConfigError(
            "the deployer key is not a valid hex private key; check GENSYN_DEPLOYER_KEY"
        ) from exc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Anvil:
    """A running anvil process that this process started (and must stop)."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        """Terminate anvil and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()


def start_anvil(*, port: int | None = None, block_time: int | None = 1, binary: Path | None = None,
                timeout: float = 10.0) -> Anvil:  # fmt: skip
    """Start anvil on 127.0.0.1 and wait until it answers; the caller stops it."""
    exe = binary or (ANVIL_BIN if ANVIL_BIN.exists() else None) or shutil.which("anvil")
    if exe is None:
        raise ChainConfigError(
            f"anvil not found at {ANVIL_BIN}; run `npm ci` at the repository root"
        )
    port = port or free_port()
    cmd = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--silent"]
    if block_time:
        cmd += ["--block-time", str(block_time)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    anvil = Anvil(proc, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise ChainConfigError(
                f"anvil exited with {proc.returncode} on port {port}: {err.strip()[:500]}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return anvil
        time.sleep(0.05)
    anvil.stop()
    raise ChainConfigError(f"anvil did not open port {port} within {timeout}s")


@contextlib.contextmanager
def chain_only_devnet(*, port: int | None = None, deployment_path: str | Path | None = None,
                      fund: int = 1_000_000 * 10**18, accounts: int = 4) -> Iterator[tuple[Anvil, Deployment, list[LocalAccount]]]:  # fmt: skip
    """Anvil with the protocol deployed and ``accounts`` fresh funded accounts (AI and gas); stops anvil on exit."""
    anvil = start_anvil(port=port)
    try:
        client = ChainClient.connect(anvil.url)
        dep = deploy_all(client, client.funder)
        if deployment_path is not None:
            dep.write(deployment_path)
        proto = Protocol(client, dep)
        funded = []
        for _ in range(accounts):
            acct = client.new_account()
            proto.mint(client.funder, acct.address, fund)
            funded.append(acct)
        yield anvil, dep, funded
    finally:
        anvil.stop()


def run_chain_only_devnet(*, port: int | None = None, deployment_path: str | Path = ".gensyn/deployment.json",
                          echo: Callable[[str], None] = print, accounts: int = 4) -> None:  # fmt: skip
    """``gensyn devnet --chain-only``: run anvil with the protocol deployed until interrupted."""
    with chain_only_devnet(port=port, deployment_path=deployment_path, accounts=accounts) as (
        anvil,
        dep,
        funded,
    ):
        echo(f"chain: {anvil.url} (chain id {dep.chain_id}, block time 1 s)")
        echo(f"deployment: {Path(deployment_path).resolve()}")
        for a in funded:
            echo(f"funded account {a.address} key {a.key.hex()}")
        echo("Ctrl-C stops the devnet")
        try:
            while anvil.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            echo("stopping")
