"""The chain client: contracts on any EVM, one method per protocol action.

``ChainClient`` is a connection (py-evm in process, or a JSON-RPC URL) with local
signing, a locked nonce manager and revert decoding; ``Protocol`` binds a
``Deployment`` and exposes the actions; ``deploy_all`` deploys and wires the
contracts. It imports ``ree._errors`` only, never torch.
"""

from coordinator.chain._artifacts import Artifact, load_artifact
from coordinator.chain._client import ChainClient, NonceManager, TxResult
from coordinator.chain._deploy import (
    Anvil,
    chain_only_devnet,
    deploy_all,
    deploy_to_rpc,
    run_chain_only_devnet,
    start_anvil,
)
from coordinator.chain._errors import ChainConfigError, ChainError, RevertDecoder
from coordinator.chain._events import Event, EventPoller
from coordinator.chain._protocol import Protocol
from coordinator.chain._types import (
    Deployment,
    Outcome,
    Reveal,
    SlotState,
    Stage,
    TaskParams,
    leaf_count,
    spot_commitment,
    spot_index,
)

__all__ = [
    "Anvil",
    "Artifact",
    "ChainClient",
    "ChainConfigError",
    "ChainError",
    "Deployment",
    "Event",
    "EventPoller",
    "NonceManager",
    "Outcome",
    "Protocol",
    "Reveal",
    "RevertDecoder",
    "SlotState",
    "Stage",
    "TaskParams",
    "TxResult",
    "chain_only_devnet",
    "deploy_all",
    "deploy_to_rpc",
    "leaf_count",
    "load_artifact",
    "run_chain_only_devnet",
    "spot_commitment",
    "spot_index",
    "start_anvil",
]
