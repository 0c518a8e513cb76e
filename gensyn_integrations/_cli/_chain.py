"""What the chain commands share: the keystore, the acting account, the node and the deployment.

Every import of ``coordinator`` is inside a function: ``gensyn --help`` imports
the group modules, and must not pull in web3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from gensyn_integrations._cli._common import Context, Handler

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from coordinator.accounts import KeystoreEntry
    from coordinator.chain import ChainClient, Protocol

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
# arguments of the contracts' errors that are AI amounts (ERC20*, InsufficientFreeStake)
_AMOUNT_ARGS = frozenset({"allowance", "balance", "free", "needed"})

KEYSTORE_HELP = (
    "the keystore directory (default: network.keystore, then $GENSYN_KEYSTORE, "
    "then ~/.gensyn/keystore)"
)
UNLOCK_NOTE = (
    "The keystore password is read from $GENSYN_PASSWORD or the file named by "
    "$GENSYN_PASSWORD_FILE, else prompted for; it is never an argument."
)
CHAIN_NOTE = (
    "The node is network.rpc_url and the contracts are in network.deployment "
    "(default .gensyn/deployment.json); set them with -o, e.g. "
    "`gensyn -o network.rpc_url=http://127.0.0.1:8545 COMMAND`."
)


def add_keystore_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--keystore DIR``."""
    parser.add_argument("--keystore", metavar="DIR", help=KEYSTORE_HELP)


def add_account_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--account ADDRESS|ALIAS`` and ``--keystore DIR``, for commands that sign."""
    parser.add_argument(
        "--account",
        metavar="ADDRESS|ALIAS",
        help="the account to act as (default: network.account, or the keystore's only account)",
    )
    add_keystore_option(parser)


def address_arg(text: str) -> str:
    """An argparse type: a 0x-prefixed address of 40 hex digits, checksummed."""
    if not _ADDRESS.match(text.strip()):
        raise argparse.ArgumentTypeError(f"an address is 0x and 40 hex digits, not {text!r}")
    from eth_utils import to_checksum_address

    return str(to_checksum_address(text.strip()))


# ---------------------------------------------------------------------- accounts


def keystore(ctx: Context) -> Path:
    """The keystore directory: ``--keystore``, config ``network.keystore``, ``$GENSYN_KEYSTORE``, the default."""
    from gensyn_integrations._network import keystore_path

    return keystore_path(ctx.config, getattr(ctx.args, "keystore", None), env=ctx.env)


def pick_account(ctx: Context) -> KeystoreEntry:
    """The account to act as: ``--account``, config ``network.account``, or the only one there is."""
    from gensyn_integrations._network import pick_account as pick

    return pick(ctx.config, keystore=getattr(ctx.args, "keystore", None),
                account=getattr(ctx.args, "account", None), env=ctx.env)  # fmt: skip


def load_signer(ctx: Context) -> LocalAccount:
    """Decrypt the acting account's keystore, asking for its password the usual way."""
    from gensyn_integrations._network import load_signer as unlock

    return unlock(ctx.config, keystore=getattr(ctx.args, "keystore", None),
                  account=getattr(ctx.args, "account", None), env=ctx.env)  # fmt: skip


def resolve_address(ctx: Context, text: str | None) -> tuple[str, str]:
    """An ADDRESS argument (an address, or an alias in the keystore), as (address, label).

    None means the acting account.
    """
    if text is None:
        entry = pick_account(ctx)
        return entry.address, entry.label
    if _ADDRESS.match(text.strip()):
        address = address_arg(text)
        return address, address
    from coordinator.accounts import find_account

    entry = find_account(text, keystore(ctx))
    return entry.address, entry.label


def who(label: str, address: str) -> str:
    """'alice (0xabc...)' or just the address."""
    return address if label == address else f"{label} ({address})"


# ---------------------------------------------------------------------- chain


def rpc_url(ctx: Context, explicit: str | None = None) -> str:
    """The node's URL: ``explicit`` (``--rpc``), else config ``network.rpc_url``."""
    from gensyn_integrations._network import rpc_url as url

    return url(ctx.config, explicit)


def deployment_path(ctx: Context) -> Path:
    """The deployment file: config ``network.deployment``, else ``.gensyn/deployment.json``."""
    from gensyn_integrations._network import deployment_path as path

    return path(ctx.config)


def connect(ctx: Context) -> tuple[ChainClient, Protocol]:
    """Connect to the configured node and bind the configured deployment, checking they match."""
    from gensyn_integrations._network import connect as open_chain

    return open_chain(ctx.config)


def when(timestamp: int, now: int) -> str:
    """A chain time as UTC, and how far it is from ``now`` (also chain time)."""
    stamp = dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    left = timestamp - now
    if left <= 0:
        return f"{stamp} (passed)"
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{v} {u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "min")) if v]
    return f"{stamp} (in {' '.join(parts[:2]) or f'{seconds} s'})"


def human_reverts(handler: Handler) -> Handler:
    """Wrap a command so that a revert's token amounts read in AI, not in base units."""

    @functools.wraps(handler)
    def run(ctx: Context) -> int:
        from coordinator.accounts import format_amount
        from coordinator.chain import ChainError

        try:
            return handler(ctx)
        except ChainError as exc:
            if not _AMOUNT_ARGS & exc.args_decoded.keys():
                raise
            shown = {
                k: format_amount(v) if k in _AMOUNT_ARGS and isinstance(v, int) else v
                for k, v in exc.args_decoded.items()
            }
            raise ChainError(exc.action, exc.error, shown, tx_hash=exc.tx_hash) from exc

    return run
