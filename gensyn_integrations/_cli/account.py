"""``gensyn account``: create, import and list the encrypted keystores that sign transactions."""

from __future__ import annotations

import getpass
import sys
import warnings
from pathlib import Path

from rich.table import Table

from gensyn_integrations._cli._chain import UNLOCK_NOTE, add_keystore_option, keystore
from gensyn_integrations._cli._common import Commands, Context, add_command, add_group
from gensyn_integrations.errors import UsageError


def register(commands: Commands) -> None:
    """Add ``gensyn account new``, ``gensyn account import`` and ``gensyn account list``."""
    account = add_group(
        commands,
        "account",
        help="encrypted keystores: create, import and list accounts",
        description="Manage the accounts that sign transactions. Each is an Ethereum V3 "
        "keystore file (scrypt-encrypted, mode 0600) in the keystore directory. " + UNLOCK_NOTE,
    )
    new = add_command(
        account,
        "new",
        _new,
        help="create a new account with a random key",
        description="Create an account with a fresh random key, and store it encrypted "
        "with a password in the keystore directory. The key itself is never shown: keep "
        "the password, and back up the keystore file. " + UNLOCK_NOTE,
        epilog="examples:\n  gensyn account new --name alice\n"
        "  GENSYN_PASSWORD_FILE=~/.pw gensyn account new --json",
    )
    new.add_argument("--name", metavar="ALIAS", help="a short name to use instead of the address")
    add_keystore_option(new)
    new.add_argument("--json", action="store_true", help="print JSON instead of text")

    imp = add_command(
        account,
        "import",
        _import,
        help="store an existing private key, encrypted",
        description="Encrypt an existing private key (64 hex digits) into the keystore. "
        "The key is read from --key-file, or prompted for without echo; never pass it as "
        "an argument. " + UNLOCK_NOTE,
        epilog="examples:\n  gensyn account import --name ops\n"
        "  gensyn account import --key-file key.txt && shred -u key.txt",
    )
    imp.add_argument("--name", metavar="ALIAS", help="a short name to use instead of the address")
    imp.add_argument(
        "--key-file",
        metavar="PATH",
        type=Path,
        help="read the private key from this file ('-' for standard input)",
    )
    add_keystore_option(imp)
    imp.add_argument("--json", action="store_true", help="print JSON instead of text")

    ls = add_command(
        account,
        "list",
        _list,
        help="list the accounts in the keystore",
        description="List the accounts in the keystore directory: alias, address and "
        "file. Needs no password.",
        epilog="examples:\n  gensyn account list\n  gensyn account list --json | jq -r '.[].address'",
    )
    add_keystore_option(ls)
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _created(ctx: Context, verb: str, address: str) -> int:
    from coordinator.accounts import find_account

    entry = find_account(address, keystore(ctx))
    if ctx.args.json:
        ctx.print_json({"address": entry.address, "alias": entry.alias, "path": str(entry.path)})
        return 0
    name = f" {entry.alias!r}" if entry.alias else ""
    print(f"{verb} account{name} {entry.address}")
    print(f"keystore file: {entry.path}")
    print("Keep the password and a backup of this file: without both, the key is lost.")
    return 0


def _new(ctx: Context) -> int:
    """Create a random account and store it encrypted."""
    from coordinator.accounts import new_account, read_password

    password = read_password("the new account", confirm=True, env=ctx.env)
    address = new_account(password, alias=ctx.args.name, keystore=keystore(ctx))
    return _created(ctx, "created", address)


def _import(ctx: Context) -> int:
    """Encrypt an existing private key into the keystore."""
    from coordinator.accounts import import_account, read_password

    key = _read_key(ctx.args.key_file)
    password = read_password("the imported account", confirm=True, env=ctx.env)
    address = import_account(key, password, alias=ctx.args.name, keystore=keystore(ctx))
    return _created(ctx, "imported", address)


def _read_key(path: Path | None) -> str:
    if path is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", getpass.GetPassWarning)
                return getpass.getpass("Private key (hex, hidden): ").strip()
        except (EOFError, getpass.GetPassWarning):
            raise UsageError(
                "there is no terminal to type the private key on; pass --key-file PATH "
                "(or --key-file - to read it from standard input)"
            ) from None
    if str(path) == "-":
        return sys.stdin.readline().strip()
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the key file {str(path)!r} ({exc}); check the path") from exc


def _list(ctx: Context) -> int:
    """Print the keystore's accounts."""
    from coordinator.accounts import list_accounts

    ks = keystore(ctx)
    entries = list_accounts(ks)
    if ctx.args.json:
        ctx.print_json(
            [{"address": e.address, "alias": e.alias, "path": str(e.path)} for e in entries]
        )
        return 0
    if not entries:
        print(f"no accounts in {ks}; create one with `gensyn account new`")
        return 0
    table = Table(title=f"accounts in {ks}", show_header=True, header_style="bold")
    table.add_column("alias")
    table.add_column("address", no_wrap=True)
    table.add_column("file", overflow="fold")
    for e in entries:
        table.add_row(e.alias or "", e.address, e.path.name)
    ctx.console().print(table)
    return 0
