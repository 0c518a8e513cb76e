"""The devnet faucet: gas money and AI for a new account, from the devnet's funded deployer.

Only on anvil's chain id 31337, where the deployer is anvil's first dev key,
whose private key is public. On any other chain there is no faucet: get ETH
and AI there the way that chain's users do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eth_utils import to_checksum_address

from coordinator.accounts._errors import FaucetError
from coordinator.accounts._units import format_amount

if TYPE_CHECKING:
    from coordinator.chain import ChainClient, Deployment

__all__ = ["FaucetReceipt", "faucet"]


@dataclass(frozen=True)
class FaucetReceipt:
    """What the faucet sent: the amounts in base units and each transaction's hash."""

    to: str
    eth: int
    ai: int
    tx_hashes: tuple[str, ...]
    minted: bool


def faucet(
    client: ChainClient, deployment: Deployment, to: str, amount_eth: int, amount_ai: int
) -> FaucetReceipt:
    """Send ``amount_eth`` wei and ``amount_ai`` AI base units to ``to`` on a devnet.

    AI is minted when the deployer still governs the token, and transferred
    from the deployer's own balance otherwise. Raises :class:`FaucetError` on
    any chain but anvil's 31337.
    """
    from eth_account import Account

    from coordinator.chain import Protocol
    from coordinator.chain._client import ANVIL_CHAIN_ID, ANVIL_DEV_KEY

    if client.chain_id != ANVIL_CHAIN_ID:
        raise FaucetError(
            f"the faucet runs on a devnet (anvil, chain id {ANVIL_CHAIN_ID}) only, and this chain "
            f"is {client.chain_id}; get ETH and AI there from someone who holds them"
        )
    if deployment.chain_id != client.chain_id:
        raise FaucetError(
            f"the deployment file is for chain {deployment.chain_id}, but the node is chain "
            f"{client.chain_id}; point network.deployment at this devnet's deployment file"
        )
    if amount_eth < 0 or amount_ai < 0:
        raise FaucetError(f"amounts must be 0 or more, not {amount_eth} wei and {amount_ai} AI")
    to = to_checksum_address(to)
    dev = Account.from_key(ANVIL_DEV_KEY)
    proto = Protocol(client, deployment)
    hashes: list[str] = []
    if amount_eth:
        hashes.append(client.send_value(dev, to, amount_eth).tx_hash)
    minted = False
    if amount_ai:
        if to_checksum_address(deployment.governance) == dev.address:
            hashes.append(proto.mint(dev, to, amount_ai).tx_hash)
            minted = True
        else:
            held = proto.balance_of(dev.address)
            if held < amount_ai:
                raise FaucetError(
                    f"the devnet deployer holds {format_amount(held)} and governance moved to "
                    f"{deployment.governance}, so it cannot send {format_amount(amount_ai)}; "
                    "ask for less, or have governance mint"
                )
            hashes.append(proto.transfer(dev, to, amount_ai).tx_hash)
    return FaucetReceipt(to, amount_eth, amount_ai, tuple(hashes), minted)
