"""The same client against a real anvil (JSON-RPC), started and killed by a session fixture."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from coordinator.chain import Anvil, ChainClient, ChainError, Deployment, EventPoller, deploy_to_rpc
from tests.coordinator.chain.chain_helpers import WINDOW, TraceModel, World, make_world, solve


@pytest.fixture
def anvil_world(anvil: Anvil) -> Iterator[World]:
    client = ChainClient.connect(anvil.url)
    snap = client.snapshot()
    try:
        yield make_world(client)
    finally:
        client.revert(snap)


def test_deploy_writes_a_deployment_file(anvil: Anvil, tmp_path: object) -> None:
    out = tmp_path / "deployment.json"  # type: ignore[operator]
    dep = deploy_to_rpc(anvil.url, out)
    assert Deployment.read(out) == dep
    assert dep.chain_id == 31337


def test_happy_path_and_reverts_on_anvil(anvil_world: World) -> None:
    w = anvil_world
    tid = w.p.post_task(w.alice, w.task()).value
    slot = solve(w, w.bob, tid, TraceModel(), 4, 32)
    with pytest.raises(ChainError, match="TooEarly"):
        w.p.finalize(w.gov, tid, slot)
    w.client.advance_time(WINDOW + 1)
    w.p.finalize(w.gov, tid, slot)
    w.check_conservation()


def test_concurrent_sends_and_events_on_anvil(anvil_world: World) -> None:
    w = anvil_world
    poller = EventPoller(
        w.client, [w.p.token], from_block=w.client.block_number() + 1, confirmations=1
    )
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            w.p.transfer(w.alice, w.dave.address, i + 1)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    w.client.mine(1)
    transfers = [
        e for e in poller.poll() if e.name == "Transfer" and e.args["to"] == w.dave.address
    ]
    assert sorted(e.args["value"] for e in transfers) == list(range(1, 13))
