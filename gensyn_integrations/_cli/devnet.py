"""``gensyn devnet``: the embedded network on this machine, until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path

from gensyn_integrations._cli._common import Commands, Context, add_command


def register(commands: Commands) -> None:
    """Add ``gensyn devnet``."""
    p = add_command(
        commands, "devnet", _devnet, help="run a local network: chain, store, solvers, verifiers, referees",
        description="Start, on 127.0.0.1: anvil (block time 1 s) with the contracts deployed and "
        "accounts funded, a local content-addressed store, and solver, verifier and referee "
        "processes. Prints a status table; Ctrl-C stops everything it started. With "
        "--chain-only, only anvil and the contracts.",
        epilog="examples:\n  gensyn devnet\n  gensyn devnet --solvers 2 --verifiers 1 --referees 2\n"
        "  gensyn devnet --chain-only --port 8545",
    )  # fmt: skip
    p.add_argument("--solvers", type=int, default=2, help="solver processes (default 2)")
    p.add_argument("--verifiers", type=int, default=1, help="verifier processes (default 1)")
    p.add_argument("--referees", type=int, default=2, help="referee processes (default 2)")
    p.add_argument("--port", type=int, default=None, help="anvil's port (default: a free one)")
    p.add_argument("--dir", type=Path, default=Path(".gensyn/devnet"), help="where state lives")
    p.add_argument("--chain-only", action="store_true", help="only anvil and the contracts")


def _devnet(ctx: Context) -> int:
    a = ctx.args
    con = ctx.console()
    if a.chain_only:
        from coordinator.chain import run_chain_only_devnet

        run_chain_only_devnet(
            port=a.port, deployment_path=a.dir / "deployment.json", echo=con.print
        )
        return 0
    from rich.table import Table

    from coordinator.devnet import devnet

    try:  # Ctrl-C at any moment, even during start-up: the devnet's exit stops what it started
        with devnet(
            a.dir, solvers=a.solvers, verifiers=a.verifiers, referees=a.referees, port=a.port
        ) as dn:
            con.print(
                f"chain {dn.rpc_url} · deployment {dn.deployment_path} · store {dn.store_path}"
            )
            con.print(f"client account {dn.user.address} key {dn.user.key.hex()}")
            table = Table("role", "address", "pid", "alive", "staked", "credits", "workdir")
            for r in dn.status():
                table.add_row(r["role"], r["address"], str(r["pid"]), "yes" if r["alive"] else "NO",
                              str(r["staked"] // 10**18), str(r["credits"]), r["workdir"])  # fmt: skip
            con.print(table)
            con.print("Ctrl-C stops the devnet")
            while all(n.alive for n in dn.nodes) and dn.anvil.process.poll() is None:
                time.sleep(1)
            con.print("a devnet process exited; stopping the rest")
            return 1
    except KeyboardInterrupt:
        con.print("stopped")
    return 0
