"""Fixtures for the network tests: one py-evm deployment per module, reverted after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coordinator.network.net import Chain, Net, make_chain


@pytest.fixture(scope="module")
def chain() -> Chain:
    """A deployed, funded, staked protocol for the module."""
    return make_chain()


@pytest.fixture
def net(chain: Chain, tmp_path: Path) -> Iterator[Net]:
    """A fresh store, client and node set over the module's chain; the chain is reverted afterwards."""
    snap = chain.client.snapshot()
    try:
        yield Net(chain, tmp_path)
    finally:
        chain.client.revert(snap)
