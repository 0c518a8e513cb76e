"""The account and funds commands through ``gensyn_integrations.cli.main``, against a real
anvil: account new -> faucet -> stake -> balance -> unstake -> (time passes) -> withdraw,
reverts and mistakes as one red paragraph, and contracts deploy."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from eth_account import Account

from coordinator.accounts import faucet, import_account, load_signer, new_account
from coordinator.chain import Anvil, ChainClient, Deployment, Protocol, TaskParams
from tests.coordinator.accounts.account_helpers import LIGHT_N, PASSWORD, Gensyn, Run

E18 = 10**18
DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's first dev account
DEV_KEY_3 = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # anvil #3


def failed(run: Run, *phrases: str) -> None:
    """A mistake: exit 2, one red paragraph naming ``phrases``, and no traceback."""
    assert run.code == 2, (run.out, run.err)
    assert run.err.startswith("gensyn: error: "), run.err
    assert "Traceback" not in run.err + run.out
    for phrase in phrases:
        assert phrase in run.err, (phrase, run.err)


def funded(on_chain: Gensyn, alias: str = "alice", ai: str = "1000") -> str:
    """A light-KDF keystore account with ETH and AI from the faucet command."""
    address = new_account(PASSWORD, alias=alias, scrypt_n=LIGHT_N)
    assert on_chain("faucet", alias, "--eth", "5", "--ai", ai).code == 0
    return address


def balance(on_chain: Gensyn, *who: str) -> dict[str, object]:
    run = on_chain("balance", *who, "--json")
    assert run.code == 0, run.err
    data = run.json()
    assert isinstance(data, dict)
    return data


# ---------------------------------------------------------------------- help


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["account", "new"], "never shown"),
        (["account", "import"], "never pass it as an argument"),
        (["account", "list"], "Needs no password"),
        (["stake"], "GENSYN_PASSWORD_FILE"),
        (["unstake"], "unbonding delay"),
        (["withdraw"], "slash rewards"),
        (["balance"], "credits waiting"),
        (["faucet"], "31337"),
        (["contracts", "deploy"], "deployment file"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_help_says_what_each_command_does(gensyn: Gensyn, argv: list[str], says: str) -> None:
    run = gensyn(*argv, "--help")
    assert run.code == 0
    assert says in " ".join(run.out.split()), run.out
    assert "examples:" in run.out


# ---------------------------------------------------------------------- accounts


def test_account_new_uses_production_scrypt_and_never_prints_the_key(
    gensyn: Gensyn, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)
    run = gensyn("account", "new", "--name", "alice", "--json")
    assert run.code == 0, run.err
    info = run.json()
    assert isinstance(info, dict)
    data = json.loads(Path(info["path"]).read_text())
    assert data["crypto"]["kdfparams"]["n"] == 2**18
    assert Account.decrypt(data, PASSWORD)  # the gensyn fixture checks it was not printed
    listed = gensyn("account", "list")
    assert listed.code == 0
    assert "alice" in listed.out
    assert info["address"] in listed.out


def test_account_import_from_a_key_file_and_from_the_prompt(
    gensyn: Gensyn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(DEV_KEY_3 + "\n")
    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)
    run = gensyn("account", "import", "--key-file", str(key_file), "--name", "carol")
    assert run.code == 0, run.err
    assert Account.from_key(DEV_KEY_3).address in run.out

    monkeypatch.delenv("GENSYN_PASSWORD")
    other = Account.create()
    answers = iter([other.key.hex(), PASSWORD, PASSWORD])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    run = gensyn("account", "import", "--name", "dora")
    assert run.code == 0, run.err
    assert other.address in run.out
    assert other.key.hex().removeprefix("0x") not in run.out + run.err


def test_import_without_a_terminal_says_to_use_a_key_file(
    gensyn: Gensyn, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tty(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(getpass, "getpass", no_tty)
    failed(gensyn("account", "import"), "--key-file")


# ---------------------------------------------------------------------- the whole flow


def test_new_faucet_stake_unstake_wait_withdraw(
    on_chain: Gensyn, chain: ChainClient, deployment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)
    created = on_chain("account", "new", "--name", "alice", "--json").json()
    assert isinstance(created, dict)
    me = created["address"]
    assert on_chain("faucet", "alice", "--eth", "5", "--ai", "1000").code == 0

    stake = on_chain("stake", "100")
    assert stake.code == 0, stake.err
    assert "staked 100 AI" in stake.out
    b = balance(on_chain)
    assert (b["address"], b["alias"], b["ai"], b["staked"], b["eth"] != "5") == (
        me, "alice", "900", "100", True,
    )  # fmt: skip

    unstake = on_chain("unstake", "40 AI")
    assert unstake.code == 0, unstake.err
    assert "withdrawable at" in unstake.out
    early = on_chain("withdraw")
    assert early.code == 0, early.err
    assert "nothing to withdraw" in early.out
    assert "40 AI still unbonding until" in early.out

    proto = Protocol(chain, Deployment.read(deployment))
    chain.advance_time(int(proto.client.call(proto.staking.functions.unbondingDelay())) + 1)
    done = on_chain("withdraw", "--json")
    assert done.code == 0, done.err
    report = done.json()
    assert isinstance(report, dict)
    assert report["unbonded_stake"] == "40"
    b = balance(on_chain, "alice")
    assert (b["ai"], b["staked"], b["unbonding"]) == ("940", "60", "0")
    table = on_chain("balance")
    assert table.code == 0
    assert "60 AI" in table.out
    assert "940 AI" in table.out
    assert "credit (market)" in table.out


def test_withdraw_takes_market_and_staking_credits(
    on_chain: Gensyn, chain: ChainClient, deployment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A solver misses its deadline: the client is refunded (market) and rewarded (staking)."""
    funded(on_chain, "alice")
    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)
    alice = load_signer("alice", PASSWORD)
    proto = Protocol(chain, Deployment.read(deployment))
    bob = Account.create()
    faucet(chain, proto.deployment, bob.address, 5 * E18, 1000 * E18)
    proto.stake(bob, 100 * E18)
    params = TaskParams("bafkspec", 100 * E18, b"\x01" * 32, commit_interval=4, total_steps=32,
                        bond=10 * E18, claim_window=3600, work_window=3600)  # fmt: skip
    task = proto.post_task(alice, params).value
    assert task is not None
    slot = proto.claim(bob, task).value
    assert slot is not None
    chain.advance_time(3 * 3600)
    proto.timeout_slot(bob, task, slot)
    before = balance(on_chain)
    assert before["market_credit"] == "100"
    assert float(str(before["staking_credit"])) > 0

    run = on_chain("withdraw", "--json")
    assert run.code == 0, run.err
    report = run.json()
    assert isinstance(report, dict)
    assert (report["market_credit"], report["staking_credit"]) == (
        before["market_credit"], before["staking_credit"],
    )  # fmt: skip
    after = balance(on_chain)
    assert (after["market_credit"], after["staking_credit"]) == ("0", "0")
    assert after["base_units"]["ai"] == (  # type: ignore[index]
        before["base_units"]["ai"] + report["base_units"]["total"]  # type: ignore[index]
    )


# ---------------------------------------------------------------------- mistakes


def test_no_password_and_no_terminal_says_what_to_set(
    on_chain: Gensyn, monkeypatch: pytest.MonkeyPatch
) -> None:
    funded(on_chain)

    def no_tty(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(getpass, "getpass", no_tty)
    failed(on_chain("stake", "1"), "no password for alice", "GENSYN_PASSWORD_FILE")


def test_a_reverted_stake_shows_the_error_in_ai(
    on_chain: Gensyn, monkeypatch: pytest.MonkeyPatch
) -> None:
    funded(on_chain, ai="10")
    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)
    run = on_chain("stake", "50")
    failed(run, "stake failed on chain: ERC20InsufficientBalance", "balance='10 AI'",
           "needed='50 AI'", "What to do:")  # fmt: skip


def test_password_from_a_file_and_a_wrong_one(
    on_chain: Gensyn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    funded(on_chain)
    pw = tmp_path / "pw"
    pw.write_text("wrong\n")
    monkeypatch.setenv("GENSYN_PASSWORD_FILE", str(pw))
    failed(on_chain("stake", "1"), "wrong password for alice")
    pw.write_text(PASSWORD + "\n")
    assert on_chain("stake", "1").code == 0


def test_unstaking_more_than_free_stake_says_how_much_is_free(
    on_chain: Gensyn, monkeypatch: pytest.MonkeyPatch
) -> None:
    funded(on_chain)
    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)
    assert on_chain("stake", "5").code == 0
    failed(on_chain("unstake", "6"), "has 5 AI of free stake", "at most 5 AI")
    failed(on_chain("unstake", "0"), "zero")
    failed(on_chain("unstake", "1 ETH"), "in ETH, but this amount is in AI")


def test_several_accounts_need_a_choice(on_chain: Gensyn, monkeypatch: pytest.MonkeyPatch) -> None:
    funded(on_chain, "alice")
    bob = funded(on_chain, "bob")
    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)
    failed(on_chain("stake", "1"), "holds 2 accounts (alice, bob)", "--account")
    assert on_chain("stake", "2", "--account", "bob").code == 0
    assert balance(on_chain, bob)["staked"] == "2"
    failed(on_chain("balance", "carol"), "no account 'carol'")


def test_missing_chain_settings_say_what_to_set(
    gensyn: Gensyn, anvil: Anvil, tmp_path: Path
) -> None:
    import_account(DEV_KEY_3, PASSWORD, alias="carol", scrypt_n=LIGHT_N)
    failed(gensyn("balance"), "network.rpc_url is not set")
    rpc = ["-o", f"network.rpc_url={anvil.url}"]
    failed(gensyn(*rpc, "balance"), "no deployment file", "gensyn contracts deploy")
    zero = "0x" + "00" * 20
    stale = tmp_path / "stale.json"
    Deployment(31337, "0x" + "12" * 20, zero, zero, zero, zero, zero, 0).write(stale)
    failed(gensyn(*rpc, "-o", f"network.deployment={stale}", "balance"), "stale")
    failed(gensyn("-o", "network.rpc_url=http://127.0.0.1:9", "balance"), "cannot reach")


# ---------------------------------------------------------------------- contracts deploy


def test_contracts_deploy_writes_the_deployment_file(
    gensyn: Gensyn,
    anvil: Anvil,
    chain: ChainClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "dep" / "deployment.json"
    run = gensyn("contracts", "deploy", "--rpc", anvil.url, "--out", str(out),
                 "--governance", Account.from_key(DEV_KEY_3).address.lower())  # fmt: skip
    assert run.code == 0, run.err
    dep = Deployment.read(out)
    assert (dep.chain_id, dep.deployer) == (31337, DEV)
    assert dep.governance == Account.from_key(DEV_KEY_3).address
    assert dep.token in run.out
    assert str(out) in run.out
    # the default path, and a key from GENSYN_DEPLOYER_KEY
    monkeypatch.setenv("GENSYN_DEPLOYER_KEY", DEV_KEY_3)
    run = gensyn("contracts", "deploy", "--rpc", anvil.url, "--json")
    assert run.code == 0, run.err
    assert (
        Deployment.read(".gensyn/deployment.json").deployer == Account.from_key(DEV_KEY_3).address
    )
    failed(gensyn("contracts", "deploy"), "network.rpc_url is not set")
    bad = gensyn("contracts", "deploy", "--rpc", anvil.url, "--governance", "0x12")
    assert bad.code == 2
    assert "an address is 0x and 40 hex digits" in bad.err
