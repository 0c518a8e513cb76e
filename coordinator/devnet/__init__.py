"""The embedded devnet: anvil with the protocol, a LocalStore, and node processes."""

from coordinator.devnet._devnet import Devnet, NodeProcess, devnet

__all__ = ["Devnet", "NodeProcess", "devnet"]
