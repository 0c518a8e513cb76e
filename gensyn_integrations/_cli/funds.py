"""``gensyn stake``, ``unstake``, ``withdraw``, ``balance`` and ``faucet``: an account's funds on chain.

Amounts are read and printed in human units (AI and ETH have 18 decimals);
``--json`` gives base units too. Staking follows DESIGN.md's roles: a solver's
bond and a verifier's or referee's stake are locked from free stake, and an
exit waits for the unbonding delay.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.table import Table

from gensyn_integrations._cli._chain import (
    CHAIN_NOTE,
    UNLOCK_NOTE,
    add_account_options,
    add_keystore_option,
    connect,
    human_reverts,
    load_signer,
    resolve_address,
    when,
    who,
)
from gensyn_integrations._cli._common import Commands, Context, add_command
from gensyn_integrations.errors import UsageError

if TYPE_CHECKING:
    from coordinator.chain import ChainClient, Protocol


def register(commands: Commands) -> None:
    """Add ``gensyn stake``, ``unstake``, ``withdraw``, ``balance`` and ``faucet``."""
    stake = add_command(
        commands,
        "stake",
        _stake,
        help="stake AI, so the account can claim tasks, verify and referee",
        description="Approve and stake AMOUNT of AI from the acting account. Solvers lock a "
        "task's bond from free stake when they claim; verifiers and referees must be staked. "
        + UNLOCK_NOTE
        + " "
        + CHAIN_NOTE,
        epilog="examples:\n  gensyn stake 100\n  gensyn stake '0.5 AI' --account alice",
    )
    stake.add_argument("amount", metavar="AMOUNT", help="AI to stake, e.g. 100 or '0.5 AI'")
    _signing_options(stake)

    unstake = add_command(
        commands,
        "unstake",
        _unstake,
        help="start the unbonding of free stake",
        description="Start unbonding AMOUNT of free (unlocked) stake. It can be withdrawn "
        "with `gensyn withdraw` after the unbonding delay (in chain time); a new request "
        "restarts the delay for everything unbonding. " + UNLOCK_NOTE + " " + CHAIN_NOTE,
        epilog="examples:\n  gensyn unstake 40\n  gensyn unstake 40 && sleep 1209600 && gensyn withdraw",
    )
    unstake.add_argument("amount", metavar="AMOUNT", help="AI to unbond, e.g. 40 or '40 AI'")
    _signing_options(unstake)

    withdraw = add_command(
        commands,
        "withdraw",
        _withdraw,
        help="take out unbonded stake and every pending credit",
        description="Send to the acting account everything it can take out now: stake "
        "whose unbonding delay has passed, pay and refunds credited by the task market, and "
        "slash rewards credited by staking. Says what is still waiting, and until when. "
        + UNLOCK_NOTE
        + " "
        + CHAIN_NOTE,
        epilog="examples:\n  gensyn withdraw\n  gensyn withdraw --account alice --json",
    )
    _signing_options(withdraw)

    balance = add_command(
        commands,
        "balance",
        _balance,
        help="show ETH, AI, stake and pending credits of an account",
        description="Show an account's ETH (gas money), AI, stake (and how much of it is "
        "locked in bonds), unbonding stake, and the credits waiting in the task market and "
        "in staking for `gensyn withdraw`. Needs no password. " + CHAIN_NOTE,
        epilog="examples:\n  gensyn balance\n  gensyn balance alice\n"
        "  gensyn balance 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --json",
    )
    balance.add_argument(
        "address",
        metavar="ADDRESS",
        nargs="?",
        help="an address, or an alias in the keystore (default: the acting account)",
    )
    add_keystore_option(balance)
    balance.add_argument("--json", action="store_true", help="print JSON instead of a table")

    faucet = add_command(
        commands,
        "faucet",
        _faucet,
        help="devnet only: give an account ETH for gas and AI",
        description="On a devnet (anvil, chain id 31337) send ETH for gas and AI to "
        "ADDRESS from the devnet's funded deployer. Refused on every other chain. " + CHAIN_NOTE,
        epilog="examples:\n  gensyn faucet alice\n"
        "  gensyn faucet 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --eth 1 --ai 5000",
    )
    faucet.add_argument(
        "address", metavar="ADDRESS", help="the address to fund, or an alias in the keystore"
    )
    faucet.add_argument("--eth", metavar="AMOUNT", default="10", help="ETH to send (default 10)")
    faucet.add_argument("--ai", metavar="AMOUNT", default="1000", help="AI to send (default 1000)")
    add_keystore_option(faucet)
    faucet.add_argument("--json", action="store_true", help="print JSON instead of text")


def _signing_options(parser: argparse.ArgumentParser) -> None:
    add_account_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _positive(text: str, unit: str = "AI") -> int:
    from coordinator.accounts import parse_amount

    amount = parse_amount(text, unit)
    if amount == 0:
        raise UsageError(f"the amount {text!r} is zero; give more than 0 {unit}")
    return amount


def _report(
    ctx: Context, action: str, amounts: dict[str, int], lines: list[str], **extra: Any
) -> int:
    from coordinator.accounts import format_amount

    if ctx.args.json:
        ctx.print_json(
            {
                "action": action,
                **{k: format_amount(v, "") for k, v in amounts.items()},
                "base_units": amounts,
                **extra,
            }
        )
    else:
        for line in lines:
            print(line)
    return 0


# ---------------------------------------------------------------------- stake


@human_reverts
def _stake(ctx: Context) -> int:
    """Approve and stake AI."""
    from coordinator.accounts import format_amount

    amount = _positive(ctx.args.amount)
    signer = load_signer(ctx)
    _, proto = connect(ctx)
    r = proto.stake(signer, amount)
    st = proto.stake_of(signer.address)
    return _report(
        ctx,
        "stake",
        {"amount": amount, "staked": st["staked"]},
        [
            f"staked {format_amount(amount)} from {signer.address} [tx {r.tx_hash}]",
            f"now staked: {format_amount(st['staked'])}",
        ],
        account=signer.address,
        tx=r.tx_hash,
    )


@human_reverts
def _unstake(ctx: Context) -> int:
    """Start unbonding free stake."""
    from coordinator.accounts import format_amount

    amount = _positive(ctx.args.amount)
    signer = load_signer(ctx)
    client, proto = connect(ctx)
    st = proto.stake_of(signer.address)
    free = st["staked"] - st["locked"]
    if amount > free:
        raise UsageError(
            f"{signer.address} has {format_amount(free)} of free stake "
            f"({format_amount(st['staked'])} staked, {format_amount(st['locked'])} locked in "
            f"bonds), so it cannot unstake {format_amount(amount)}; unstake at most "
            f"{format_amount(free)}, or wait until its tasks settle"
        )
    r = proto.request_unstake(signer, amount)
    st = proto.stake_of(signer.address)
    lines = [
        f"unbonding {format_amount(amount)} from {signer.address} [tx {r.tx_hash}]",
        f"{format_amount(st['unbonding'])} unbonding, withdrawable at "
        f"{when(st['unbond_at'], client.now())}; then run `gensyn withdraw`",
    ]
    return _report(
        ctx,
        "unstake",
        {"amount": amount, "unbonding": st["unbonding"]},
        lines,
        account=signer.address,
        tx=r.tx_hash,
        unbond_at=st["unbond_at"],
    )


@human_reverts
def _withdraw(ctx: Context) -> int:
    """Take out unbonded stake and every pending credit."""
    from coordinator.accounts import format_amount

    signer = load_signer(ctx)
    client, proto = connect(ctx)
    me = signer.address
    st = proto.stake_of(me)
    now = client.now()
    taken: dict[str, int] = {}
    txs: list[str] = []
    lines: list[str] = []
    if st["unbonding"] and now >= st["unbond_at"]:
        txs.append(proto.withdraw_unstaked(signer).tx_hash)
        taken["unbonded_stake"] = st["unbonding"]
    market, slash = proto.credit(me), proto.slash_credit(me)
    if market:
        txs.append(proto.withdraw(signer).tx_hash)
        taken["market_credit"] = market
    if slash:
        txs.append(proto.withdraw_slash_credit(signer).tx_hash)
        taken["staking_credit"] = slash
    for what, amount in taken.items():
        lines.append(f"withdrew {format_amount(amount)} of {what.replace('_', ' ')} to {me}")
    if not taken:
        lines.append(f"nothing to withdraw for {me} now")
    waiting = st["unbonding"] if "unbonded_stake" not in taken else 0
    if waiting:
        lines.append(
            f"{format_amount(waiting)} still unbonding until {when(st['unbond_at'], now)}; "
            "run `gensyn withdraw` again then"
        )
    return _report(
        ctx,
        "withdraw",
        {**taken, "total": sum(taken.values()), "still_unbonding": waiting},
        lines,
        account=me,
        txs=txs,
        unbond_at=st["unbond_at"] if waiting else None,
    )


# ---------------------------------------------------------------------- balance


def _balances(client: ChainClient, proto: Protocol, address: str) -> dict[str, int]:
    st = proto.stake_of(address)
    return {
        "eth": client.balance(address),
        "ai": proto.balance_of(address),
        "staked": st["staked"],
        "locked": st["locked"],
        "unbonding": st["unbonding"],
        "market_credit": proto.credit(address),
        "staking_credit": proto.slash_credit(address),
        "unbond_at": st["unbond_at"],
    }


def _balance(ctx: Context) -> int:
    """Print an account's funds."""
    from coordinator.accounts import format_amount

    address, label = resolve_address(ctx, ctx.args.address)
    client, proto = connect(ctx)
    b = _balances(client, proto, address)
    now = client.now()
    if ctx.args.json:
        amounts = {k: v for k, v in b.items() if k != "unbond_at"}
        ctx.print_json(
            {
                "address": address,
                "alias": None if label == address else label,
                "chain_id": client.chain_id,
                **{k: format_amount(v, "") for k, v in amounts.items()},
                "base_units": amounts,
                "unbond_at": b["unbond_at"] or None,
                "chain_time": now,
            }
        )
        return 0
    table = Table(
        title=f"{who(label, address)} on chain {client.chain_id}",
        show_header=True,
        header_style="bold",
    )
    table.add_column("what")
    table.add_column("amount", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    table.add_row("ETH", format_amount(b["eth"], "ETH"), "gas money")
    table.add_row("AI", format_amount(b["ai"]), "in the wallet")
    table.add_section()
    table.add_row("staked", format_amount(b["staked"]), "includes locked")
    table.add_row("locked", format_amount(b["locked"]), "bonds of claimed tasks and disputes")
    unbond_note = f"withdrawable at {when(b['unbond_at'], now)}" if b["unbonding"] else ""
    table.add_row("unbonding", format_amount(b["unbonding"]), unbond_note)
    table.add_section()
    pending = "`gensyn withdraw` takes it out"
    table.add_row(
        "credit (market)", format_amount(b["market_credit"]), pending if b["market_credit"] else ""
    )
    table.add_row(
        "credit (staking)",
        format_amount(b["staking_credit"]),
        pending if b["staking_credit"] else "",
    )
    ctx.console().print(table)
    return 0


# ---------------------------------------------------------------------- faucet


@human_reverts
def _faucet(ctx: Context) -> int:
    """Fund an account on a devnet."""
    from coordinator.accounts import faucet, format_amount, parse_amount

    eth, ai = parse_amount(ctx.args.eth, "ETH"), parse_amount(ctx.args.ai, "AI")
    if not eth and not ai:
        raise UsageError("both --eth and --ai are 0; ask the faucet for something")
    address, label = resolve_address(ctx, ctx.args.address)
    client, proto = connect(ctx)
    r = faucet(client, proto.deployment, address, eth, ai)
    how = "minted" if r.minted else "sent"
    return _report(
        ctx,
        "faucet",
        {"eth": eth, "ai": ai},
        [
            f"sent {format_amount(eth, 'ETH')} and {how} {format_amount(ai)} to {who(label, address)}"
        ],
        to=address,
        txs=list(r.tx_hashes),
    )
