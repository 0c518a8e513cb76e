"""Helpers for the account tests: the test password, a light scrypt cost, and a runner for
the ``gensyn`` command line that remembers everything it printed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account

from gensyn_integrations.cli import main

PASSWORD = "correct horse battery staple"
LIGHT_N = 2**4  # scrypt cost for keystores made through the API in tests; production is 2**18


@dataclass
class Run:
    """What one ``gensyn`` invocation returned and printed."""

    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Gensyn:
    """Runs ``gensyn`` in process; ``chain_args`` point it at the session's anvil."""

    capsys: pytest.CaptureFixture[str]
    chain_args: list[str] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)

    def __call__(self, *argv: str) -> Run:
        code = main([*self.chain_args, *argv])
        out, err = self.capsys.readouterr()
        self.printed += [out, err]
        return Run(code, out, err)


def keys_in(keystore: Path) -> list[str]:
    """Every private key in the test keystore (all are encrypted with PASSWORD)."""
    return [
        Account.decrypt(json.loads(path.read_text()), PASSWORD).hex()
        for path in keystore.glob("*.json")
    ]
