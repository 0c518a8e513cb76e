"""Encrypted keystores: one Ethereum V3 keystore file (scrypt, AES-128-CTR) per account.

A keystore directory holds ``<address>.json`` files, each readable only by its
owner (mode 0600) and written atomically, so a crash never leaves half a key.
A file may carry an ``alias`` beside the standard fields, a short name to use
instead of the address; other tools that read V3 keystores ignore it.

The directory is, first found: the argument, ``$GENSYN_KEYSTORE``, then
``~/.gensyn/keystore``. The CLI passes config ``network.keystore`` as the argument.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from coordinator.accounts._errors import (
    AccountExistsError,
    AccountNotFoundError,
    KeystoreError,
    WrongPasswordError,
)

__all__ = [
    "DEFAULT_KEYSTORE",
    "KEYSTORE_ENV",
    "SCRYPT_N",
    "KeystoreEntry",
    "find_account",
    "import_account",
    "keystore_dir",
    "list_accounts",
    "load_signer",
    "new_account",
]

KEYSTORE_ENV = "GENSYN_KEYSTORE"
DEFAULT_KEYSTORE = Path("~/.gensyn/keystore")
# geth's "standard" scrypt cost (eth-keyfile's default): about 1 s and 256 MiB to decrypt.
SCRYPT_N = 2**18

_ADDRESS = re.compile(r"^(0x)?[0-9a-fA-F]{40}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_FILE_MODE = 0o600
_DIR_MODE = 0o700

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class KeystoreEntry:
    """One account in a keystore directory: its address, optional alias and file."""

    address: str
    alias: str | None
    path: Path

    @property
    def label(self) -> str:
        """The alias if there is one, else the address: how to name the account to a person."""
        return self.alias or self.address


def keystore_dir(path: PathLike | None = None, *, env: Mapping[str, str] | None = None) -> Path:
    """The keystore directory: ``path``, else ``$GENSYN_KEYSTORE``, else ``~/.gensyn/keystore``."""
    env = os.environ if env is None else env
    chosen = path if path not in (None, "") else env.get(KEYSTORE_ENV) or DEFAULT_KEYSTORE
    return Path(chosen).expanduser()


def new_account(
    password: str,
    *,
    alias: str | None = None,
    keystore: PathLike | None = None,
    scrypt_n: int = SCRYPT_N,
) -> str:
    """Create a random account, store it encrypted with ``password``, and return its address.

    ``scrypt_n`` is the scrypt cost; lower it only in tests.
    """
    acct: LocalAccount = Account.create()
    return _store(acct, password, alias, keystore, scrypt_n).address


def import_account(
    private_key: str | bytes,
    password: str,
    *,
    alias: str | None = None,
    keystore: PathLike | None = None,
    scrypt_n: int = SCRYPT_N,
) -> str:
    """Store an existing private key (32 bytes, or 64 hex digits with or without 0x) encrypted; returns its address."""
    key = private_key.strip() if isinstance(private_key, str) else private_key
    try:
        acct: LocalAccount = Account.from_key(key)
    except Exception:  # noqa: BLE001 - eth-keys raises several types; never echo the key
        raise KeystoreError(
            "the private key is not valid: write it as 64 hex digits, with or without 0x"
        ) from None
    return _store(acct, password, alias, keystore, scrypt_n).address


def list_accounts(keystore: PathLike | None = None) -> list[KeystoreEntry]:
    """Every account in the keystore directory, sorted by alias then address; [] if there is none."""
    root = keystore_dir(keystore)
    if not root.exists():
        return []
    if not root.is_dir():
        raise KeystoreError(
            f"the keystore {str(root)!r} is a file, not a directory; "
            f"point network.keystore or ${KEYSTORE_ENV} at a directory"
        )
    entries = [_entry(p, _read(p)) for p in sorted(root.glob("*.json")) if p.is_file()]
    return sorted(entries, key=lambda e: (e.alias is None, e.alias or "", e.address))


def find_account(address_or_alias: str, keystore: PathLike | None = None) -> KeystoreEntry:
    """The keystore entry named by an address (any case, 0x optional) or an alias."""
    entries = list_accounts(keystore)
    wanted = address_or_alias.strip()
    if _ADDRESS.match(wanted):
        address = to_checksum_address("0x" + wanted.removeprefix("0x").removeprefix("0X"))
        found = [e for e in entries if e.address == address]
    else:
        found = [e for e in entries if e.alias == wanted]
    if not found:
        known = ", ".join(e.label for e in entries) or "none"
        raise AccountNotFoundError(
            f"no account {wanted!r} in the keystore {str(keystore_dir(keystore))!r} "
            f"(it holds: {known}); run `gensyn account list`, or create one with "
            "`gensyn account new` or `gensyn account import`"
        )
    return found[0]


def load_signer(
    address_or_alias: str, password: str, *, keystore: PathLike | None = None
) -> LocalAccount:
    """Decrypt the keystore of ``address_or_alias`` with ``password``: the account that signs."""
    entry = find_account(address_or_alias, keystore)
    data = _read(entry.path)
    try:
        key = Account.decrypt(data, password)
    except Exception as exc:  # noqa: BLE001 - eth-keyfile raises KeyError, ValueError, TypeError...
        if "MAC mismatch" in str(exc):
            raise WrongPasswordError(
                f"wrong password for {entry.label} ({entry.address}); check $GENSYN_PASSWORD "
                "or $GENSYN_PASSWORD_FILE, or type it again"
            ) from None
        raise _malformed(entry.path, f"it cannot be decrypted: {type(exc).__name__} {exc}") from exc
    acct: LocalAccount = Account.from_key(key)
    if acct.address != entry.address:
        raise _malformed(entry.path, f"its key belongs to {acct.address}, not {entry.address}")
    return acct


# ---------------------------------------------------------------------- files


def _store(
    acct: LocalAccount, password: str, alias: str | None, keystore: PathLike | None, scrypt_n: int
) -> KeystoreEntry:
    if not password:
        raise KeystoreError("a keystore needs a non-empty password")
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
        raise KeystoreError(f"scrypt_n must be a power of two above 1, not {scrypt_n!r}")
    root = keystore_dir(keystore)
    existing = list_accounts(root)
    if alias is not None:
        if not _ALIAS.match(alias) or _ADDRESS.match(alias):
            raise KeystoreError(
                f"the alias {alias!r} is not valid: start with a letter, then up to 63 letters, "
                "digits, '_', '.' or '-'"
            )
        if any(e.alias == alias for e in existing):
            raise AccountExistsError(
                f"the alias {alias!r} is taken in {str(root)!r}; choose another"
            )
    if any(e.address == acct.address for e in existing):
        raise AccountExistsError(
            f"{acct.address} is already in the keystore {str(root)!r}; nothing to do"
        )
    data: dict[str, Any] = Account.encrypt(acct.key, password, kdf="scrypt", iterations=scrypt_n)
    data["address"] = acct.address.removeprefix("0x").lower()
    if alias is not None:
        data["alias"] = alias
    path = root / f"{acct.address}.json"
    _write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return KeystoreEntry(acct.address, alias, path)


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 atomically; fail if it exists rather than overwrite a key."""
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # os.open's mode is masked by the umask
        try:
            os.link(tmp, path)  # atomic, and never replaces an existing file
        except FileExistsError:
            raise AccountExistsError(
                f"{str(path)!r} already exists; the account is already in the keystore"
            ) from None
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # make the new name durable; not every OS can
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeystoreError(
            f"cannot read the keystore file {str(path)!r} ({exc}); check its permissions"
        ) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise _malformed(path, f"it is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _malformed(path, "it is not a JSON object")
    if data.get("version") != 3:
        raise _malformed(path, f"its version is {data.get('version')!r}, not 3")
    if not isinstance(data.get("crypto"), dict):
        raise _malformed(path, "it has no 'crypto' section")
    if not isinstance(data.get("address"), str) or not _ADDRESS.match(data["address"]):
        raise _malformed(path, f"its address {data.get('address')!r} is not 40 hex digits")
    alias = data.get("alias")
    if alias is not None and (not isinstance(alias, str) or not _ALIAS.match(alias)):
        raise _malformed(path, f"its alias {alias!r} is not valid")
    return data


def _entry(path: Path, data: Mapping[str, Any]) -> KeystoreEntry:
    address = to_checksum_address("0x" + str(data["address"]).removeprefix("0x"))
    return KeystoreEntry(address, data.get("alias"), path)


def _malformed(path: Path, why: str) -> KeystoreError:
    return KeystoreError(
        f"{str(path)!r} is not a valid Ethereum V3 keystore: {why}. Restore it from a backup, "
        "or move it out of the keystore directory"
    )
