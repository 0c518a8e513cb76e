"""``gensyn contracts deploy``: put the protocol's contracts on a chain and write the deployment file."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from gensyn_integrations._cli._chain import (
    KEYSTORE_HELP,
    UNLOCK_NOTE,
    address_arg,
    deployment_path,
    load_signer,
    rpc_url,
)
from gensyn_integrations._cli._common import Commands, Context, add_command, add_group
from gensyn_integrations.errors import UsageError

DEPLOYER_KEY_ENV = "GENSYN_DEPLOYER_KEY"


def register(commands: Commands) -> None:
    """Add ``gensyn contracts deploy``."""
    contracts = add_group(
        commands,
        "contracts",
        help="deploy the protocol's contracts (token, staking, task market, dispute game)",
        description="Deploy the compiled contracts in contracts/artifacts/ to an EVM chain.",
    )
    deploy = add_command(
        contracts,
        "deploy",
        _deploy,
        help="deploy the contracts to a JSON-RPC node and write the deployment file",
        description="Deploy AIToken, Staking, TaskMarket and DisputeGame to the node at "
        "--rpc, wire them together, optionally hand governance to --governance, and write "
        "their addresses to the deployment file that every other command reads "
        "(network.deployment). The deployer signs with --account (a keystore account), else "
        f"the hex key in ${DEPLOYER_KEY_ENV}, else, on anvil (chain id 31337) only, "
        "anvil's first dev account. " + UNLOCK_NOTE,
        epilog="examples:\n  gensyn contracts deploy --rpc http://127.0.0.1:8545\n"
        "  gensyn contracts deploy --rpc https://l2.example --account ops \\\n"
        "      --governance 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --out deployment.json",
    )
    deploy.add_argument(
        "--rpc", metavar="URL", help="the node's JSON-RPC URL (default: network.rpc_url)"
    )
    deploy.add_argument(
        "--out",
        metavar="PATH",
        type=Path,
        help="where to write the deployment file (default: network.deployment, "
        "else .gensyn/deployment.json)",
    )
    deploy.add_argument(
        "--governance",
        metavar="ADDRESS",
        type=address_arg,
        help="the address that will own the protocol's parameters (default: the deployer)",
    )
    deploy.add_argument(
        "--account",
        metavar="ADDRESS|ALIAS",
        help=f"the keystore account that deploys and pays gas (default: ${DEPLOYER_KEY_ENV})",
    )
    deploy.add_argument("--keystore", metavar="DIR", help=KEYSTORE_HELP)
    deploy.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _deploy(ctx: Context) -> int:
    """Deploy and write the deployment file."""
    from coordinator.chain import ChainClient, deploy_to_rpc
    from coordinator.chain._client import ANVIL_CHAIN_ID

    url = rpc_url(ctx, ctx.args.rpc)
    out: Path = ctx.args.out or deployment_path(ctx)
    if ctx.args.account:
        key: str | None = load_signer(ctx).key.hex()
    else:
        key = ctx.env.get(DEPLOYER_KEY_ENV)
    if key is None and ChainClient.connect(url).chain_id != ANVIL_CHAIN_ID:
        raise UsageError(
            f"no deployer for the chain at {url!r}: it is not anvil (chain id {ANVIL_CHAIN_ID}), "
            f"so there is no dev key. Pass --account with a funded keystore account, or set "
            f"{DEPLOYER_KEY_ENV} to a funded account's hex private key"
        )
    dep = deploy_to_rpc(url, out, deployer_key=key, governance=ctx.args.governance)
    if ctx.args.json:
        ctx.print_json({"path": str(out), **vars(dep)})
        return 0
    table = Table(title=f"deployed on chain {dep.chain_id}", show_header=True, header_style="bold")
    table.add_column("contract")
    table.add_column("address", no_wrap=True)
    for name in ("token", "staking", "market", "game", "governance", "deployer"):
        table.add_row(name, getattr(dep, name))
    ctx.console().print(table)
    print(f"wrote the deployment file {out} (first block {dep.block})")
    return 0
