"""Fixtures for the chain tests: a py-evm deployment per module (each test runs from a
snapshot), and one real anvil per session that is killed at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coordinator.chain import ChainClient
from tests.coordinator.chain.chain_helpers import World, make_world


@pytest.fixture(scope="module")
def base_world() -> World:
    """One deployment per test module; each test runs from a snapshot of it."""
    return make_world(ChainClient.in_process())


@pytest.fixture
def world(base_world: World) -> Iterator[World]:
    snap = base_world.client.snapshot()
    try:
        yield base_world
    finally:
        base_world.client.revert(snap)
