"""Keystores, passwords and amounts, without a chain: round trips, wrong passwords, file
modes, malformed files, and where a password may come from."""

from __future__ import annotations

import getpass
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from coordinator.accounts import (
    SCRYPT_N,
    AccountExistsError,
    AccountNotFoundError,
    AmountError,
    FaucetError,
    KeystoreError,
    PasswordError,
    WrongPasswordError,
    faucet,
    format_amount,
    import_account,
    keystore_dir,
    list_accounts,
    load_signer,
    new_account,
    parse_amount,
    read_password,
)
from coordinator.chain import ChainClient, Deployment
from ree._errors import GensynError
from tests.coordinator.accounts.account_helpers import LIGHT_N, PASSWORD

KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def make(ks: Path, alias: str | None = "alice", key: str | None = None) -> str:
    if key is None:
        return new_account(PASSWORD, alias=alias, keystore=ks, scrypt_n=LIGHT_N)
    return import_account(key, PASSWORD, alias=alias, keystore=ks, scrypt_n=LIGHT_N)


# ---------------------------------------------------------------------- keystores


def test_round_trip_by_alias_and_by_address_in_any_spelling(isolated: Path) -> None:
    address = make(isolated)
    [entry] = list_accounts(isolated)
    assert (entry.address, entry.alias, entry.path.parent) == (address, "alice", isolated)
    for name in ("alice", address, address.lower(), address[2:].lower()):
        assert load_signer(name, PASSWORD, keystore=isolated).address == address


def test_an_imported_key_comes_back_unchanged(isolated: Path) -> None:
    address = make(isolated, alias=None, key=KEY)
    assert address == Account.from_key(KEY).address
    signer = load_signer(address, PASSWORD, keystore=isolated)
    assert signer.key.hex().removeprefix("0x") == KEY[2:]


def test_wrong_password_is_a_clear_error(isolated: Path) -> None:
    make(isolated)
    with pytest.raises(WrongPasswordError, match=r"wrong password for alice \(0x") as info:
        load_signer("alice", "not it", keystore=isolated)
    assert isinstance(info.value, GensynError)
    assert isinstance(info.value, ValueError)
    assert "not it" not in str(info.value)


def test_files_are_private_atomic_and_standard(isolated: Path) -> None:
    address = make(isolated)
    files = list(isolated.iterdir())
    assert [f.name for f in files] == [f"{address}.json"]  # no temporary file left behind
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(isolated.stat().st_mode) == 0o700
    data = json.loads(files[0].read_text())
    assert data["version"] == 3
    assert data["crypto"]["kdf"] == "scrypt"
    assert data["crypto"]["kdfparams"]["n"] == LIGHT_N
    assert KEY[2:] not in files[0].read_text()


def test_production_scrypt_cost_is_the_default() -> None:
    import inspect

    assert SCRYPT_N >= 2**18
    for fn in (new_account, import_account):
        assert inspect.signature(fn).parameters["scrypt_n"].default == SCRYPT_N


def _swap_address(d: dict[str, Any]) -> None:
    d["address"] = "11" * 20


MUTATIONS: dict[str, Callable[[dict[str, Any]], object]] = {
    "version 2": lambda d: d.update(version=2),
    "no crypto": lambda d: d.pop("crypto"),
    "bad address": lambda d: d.update(address="xyz"),
    "unknown kdf": lambda d: d["crypto"].update(kdf="argon9"),
    "no salt": lambda d: d["crypto"]["kdfparams"].pop("salt"),
    "another address": _swap_address,
}


@pytest.mark.parametrize("mutate", list(MUTATIONS.values()), ids=list(MUTATIONS))
def test_a_malformed_keystore_names_the_file(
    isolated: Path, mutate: Callable[[dict[str, Any]], object]
) -> None:
    address = make(isolated, alias=None)
    path = isolated / f"{address}.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    name = "0x" + "11" * 20 if data.get("address") == "11" * 20 else address
    with pytest.raises(KeystoreError, match="not a valid Ethereum V3 keystore") as info:
        load_signer(name, PASSWORD, keystore=isolated)  # lists the keystore, then decrypts
    assert str(path) in str(info.value)


def test_a_file_that_is_not_json_is_refused(isolated: Path) -> None:
    isolated.mkdir()
    (isolated / "junk.json").write_text("{not json")
    with pytest.raises(KeystoreError, match=r"junk\.json.*not JSON"):
        list_accounts(isolated)


def test_duplicates_bad_aliases_and_bad_keys_are_refused(isolated: Path) -> None:
    make(isolated, key=KEY)
    with pytest.raises(AccountExistsError, match="already in the keystore"):
        make(isolated, alias=None, key=KEY)
    with pytest.raises(AccountExistsError, match="alias 'alice' is taken"):
        make(isolated)
    with pytest.raises(KeystoreError, match="alias '9lives' is not valid"):
        make(isolated, alias="9lives")
    with pytest.raises(KeystoreError, match="non-empty password"):
        new_account("", keystore=isolated, scrypt_n=LIGHT_N)
    secret = "ab" * 31 + "zz"
    with pytest.raises(KeystoreError, match="private key is not valid") as info:
        make(isolated, alias=None, key=secret)
    assert secret not in str(info.value)
    assert len(list_accounts(isolated)) == 1


def test_an_unknown_account_lists_the_known_ones(isolated: Path) -> None:
    make(isolated)
    with pytest.raises(AccountNotFoundError, match=r"no account 'bob'.*holds: alice"):
        load_signer("bob", PASSWORD, keystore=isolated)
    assert list_accounts(isolated / "nowhere") == []


def test_keystore_dir_argument_then_env_then_home(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert keystore_dir(tmp_path / "x") == tmp_path / "x"
    assert keystore_dir() == isolated  # GENSYN_KEYSTORE, set by the fixture
    monkeypatch.delenv("GENSYN_KEYSTORE")
    assert keystore_dir() == tmp_path / "home" / ".gensyn" / "keystore"


# ---------------------------------------------------------------------- passwords


def test_password_from_env_and_from_file(tmp_path: Path) -> None:
    assert read_password(env={"GENSYN_PASSWORD": "pw1"}) == "pw1"
    f = tmp_path / "pw"
    f.write_text("pw2\n")
    assert read_password(env={"GENSYN_PASSWORD_FILE": str(f)}) == "pw2"
    with pytest.raises(PasswordError, match="both GENSYN_PASSWORD and GENSYN_PASSWORD_FILE"):
        read_password(env={"GENSYN_PASSWORD": "a", "GENSYN_PASSWORD_FILE": str(f)})
    with pytest.raises(PasswordError, match="cannot read the password file"):
        read_password(env={"GENSYN_PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(PasswordError, match="empty"):
        read_password(confirm=True, env={"GENSYN_PASSWORD": ""})


def test_password_from_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed", "typed", "one", "two"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert read_password("alice", confirm=True, env={}) == "typed"
    assert prompts == ["Password for alice: ", "Repeat the password: "]
    with pytest.raises(PasswordError, match="differ"):
        read_password(confirm=True, env={})


def test_no_terminal_and_no_env_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tty(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(getpass, "getpass", no_tty)
    with pytest.raises(PasswordError, match="GENSYN_PASSWORD_FILE"):
        read_password(env={})


# ---------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("text", "base"),
    [
        ("10", 10 * 10**18),
        ("0.5 AI", 5 * 10**17),
        ("0.5ai", 5 * 10**17),
        ("1_000", 1000 * 10**18),
        ("0.000000000000000001", 1),
        ("0", 0),
        ("5.", 5 * 10**18),
        (".25", 25 * 10**16),
        (
            "123456789012345678901234567890.123456789012345678",
            123456789012345678901234567890123456789012345678,
        ),
    ],
)
def test_amounts_read_in_human_units(text: str, base: int) -> None:
    assert parse_amount(text) == base


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("ten", "not an amount"),
        ("1.2.3", "not an amount"),
        ("-1", "negative"),
        ("1 ETH", "in ETH, but this amount is in AI"),
        ("0.0000000000000000001", "more than 18 decimals"),
        ("1e3", "not an amount"),
        ("_", "not an amount"),
        (".", "not an amount"),
        ("", "not an amount"),
    ],
)
def test_bad_amounts_say_why(text: str, why: str) -> None:
    with pytest.raises(AmountError, match=why):
        parse_amount(text)


@pytest.mark.parametrize(
    ("base", "text"),
    [(10**18, "1 AI"), (15 * 10**17, "1.5 AI"), (1, "0.000000000000000001 AI"), (0, "0 AI")],
)
def test_amounts_print_exactly(base: int, text: str) -> None:
    assert format_amount(base) == text
    assert parse_amount(text) == base


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_format_then_parse_is_exact(base: int) -> None:
    assert parse_amount(format_amount(base)) == base
    assert parse_amount(format_amount(base, "ETH"), "ETH") == base


# ---------------------------------------------------------------------- faucet


def test_the_faucet_refuses_a_chain_that_is_not_a_devnet() -> None:
    client = ChainClient.in_process()  # py-evm: chain id 131277322940537
    zero = "0x" + "00" * 20
    dep = Deployment(client.chain_id, zero, zero, zero, zero, zero, zero, 0)
    with pytest.raises(FaucetError, match="devnet .* only") as info:
        faucet(client, dep, zero, 10**18, 10**18)
    assert isinstance(info.value, GensynError)
