"""Event polling with a confirmation depth.

A node watching the market (a solver waiting for tasks, a verifier waiting for
reveals) polls here. Only blocks at least ``confirmations`` deep are read, so a
short reorg on a real chain cannot show an event that later disappears; each
block is read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web3.contract import Contract
from web3.logs import DISCARD

from coordinator.chain._client import ChainClient


@dataclass(frozen=True)
class Event:
    """One decoded log."""

    contract: str
    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    tx_hash: str


class EventPoller:
    """Reads the events of some contracts block range by block range, behind a confirmation depth."""

    def __init__(
        self, client: ChainClient, contracts: list[Contract], *, from_block: int = 0,
        confirmations: int = 0, max_range: int = 5_000,
    ) -> None:  # fmt: skip
        if confirmations < 0:
            raise ValueError(f"confirmations must be >= 0, got {confirmations!r}")
        self.client = client
        self.contracts = {c.address: c for c in contracts}
        self.next_block = from_block
        self.confirmations = confirmations
        self.max_range = max_range

    def poll(self) -> list[Event]:
        """New events from confirmed blocks since the last poll, in chain order."""
        head = self.client.block_number() - self.confirmations
        out: list[Event] = []
        while self.next_block <= head:
            to = min(head, self.next_block + self.max_range - 1)
            logs = self.client.get_logs(self.next_block, to, list(self.contracts))
            for log in logs:
                out.extend(self._decode(log))
            self.next_block = to + 1
        out.sort(key=lambda e: (e.block_number, e.log_index))
        return out

    def _decode(self, log: Any) -> list[Event]:
        c = self.contracts.get(log["address"])
        if c is None:
            return []
        found = []
        for ev in c.events:
            for d in ev().process_receipt({"logs": [log]}, errors=DISCARD):
                found.append(
                    Event(
                        contract=c.address,
                        name=d["event"],
                        args=dict(d["args"]),
                        block_number=int(log["blockNumber"]),
                        log_index=int(log["logIndex"]),
                        tx_hash=log["transactionHash"].to_0x_hex(),
                    )  # fmt: skip
                )
        return found
