"""Fixtures for the account tests: an isolated keystore and environment per test, one real
anvil per session with the protocol deployed (killed at the end), and a runner for the
``gensyn`` command line that checks no private key is ever printed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.chain import Anvil, ChainClient, deploy_to_rpc
from coordinator.chain._client import ANVIL_DEV_KEY
from tests.coordinator.accounts.account_helpers import Gensyn, keys_in


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, HOME and keystore; no GENSYN_* variable from outside."""
    for name in list(os.environ):
        if name.startswith("GENSYN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    ks = tmp_path / "keystore"
    monkeypatch.setenv("GENSYN_KEYSTORE", str(ks))
    return ks


@pytest.fixture(scope="session")
def deployment(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The protocol deployed once on the session's anvil; the path of its deployment file."""
    path = tmp_path_factory.mktemp("deployment") / "deployment.json"
    deploy_to_rpc(anvil.url, path)
    return path


@pytest.fixture
def chain(anvil: Anvil, deployment: Path) -> Iterator[ChainClient]:
    """A client on the session's anvil; the chain returns to its state before the test after it."""
    client = ChainClient.connect(anvil.url)
    snap = client.snapshot()
    try:
        yield client
    finally:
        client.revert(snap)


@pytest.fixture
def gensyn(capsys: pytest.CaptureFixture[str], isolated: Path) -> Iterator[Gensyn]:
    """The CLI runner; afterwards, asserts that no private key it could know was printed."""
    runner = Gensyn(capsys)
    yield runner
    text = "\n".join(runner.printed).lower()
    for key in [*keys_in(isolated), ANVIL_DEV_KEY]:
        bare = key.lower().removeprefix("0x")
        assert bare not in text, "a private key was printed"


@pytest.fixture
def on_chain(gensyn: Gensyn, chain: ChainClient, anvil: Anvil, deployment: Path) -> Gensyn:
    """The CLI runner, pointed at the session's anvil and deployment."""
    gensyn.chain_args = [
        "-o",
        f"network.rpc_url={anvil.url}",
        "-o",
        f"network.deployment={deployment}",
    ]
    return gensyn
