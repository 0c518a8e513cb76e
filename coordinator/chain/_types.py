"""Records that cross the chain boundary: task parameters, reveals, deployments.

The commitment formulas here must match TaskMarket.sol byte for byte.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from coordinator.chain._errors import ChainConfigError

BPS = 10_000
REVEAL_TUPLE = "(bool,bytes32,uint64,bytes32,string,string,bytes32)"


class SlotState(IntEnum):
    """TaskMarket.SlotState."""

    OPEN = 0
    CLAIMED = 1
    COMMITTED = 2
    REVEALED = 3
    DISPUTED = 4
    PAID = 5
    SLASHED = 6
    EXPIRED = 7
    DEMANDED = 8


class Stage(IntEnum):
    """DisputeGame.Stage."""

    NONE = 0
    BISECT = 1
    STEP_ROOTS = 2
    OP_TRACES = 3
    AWAIT_REFEREE = 4
    RULING = 5
    APPEALABLE = 6
    RESOLVED = 7


class Outcome(IntEnum):
    """IProtocol.Outcome."""

    NONE = 0
    DEFENDER_WON = 1
    CHALLENGER_WON = 2
    BOTH_LOST = 3
    NO_CONTEST = 4


@dataclass(frozen=True)
class TaskParams:
    """What a client posts (DESIGN.md step 2); windows in seconds of chain time."""

    spec_cid: str
    budget: int
    initial_root: bytes
    commit_interval: int
    total_steps: int
    bond: int
    claim_window: int = 3600
    work_window: int = 86400
    reveal_window: int = 3600
    challenge_window: int = 3600
    replicas: int = 1
    spot_checks: int = 0
    verifier_fee: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        """The TaskMarket.TaskParams tuple, in field order."""
        return (
            self.spec_cid, self.budget, self.initial_root, self.commit_interval, self.total_steps,
            self.claim_window, self.work_window, self.reveal_window, self.challenge_window,
            self.replicas, self.spot_checks, self.bond, self.verifier_fee,
        )  # fmt: skip

    @property
    def escrow(self) -> int:
        """Tokens the client must approve: the budget plus every spot-check fee."""
        return self.budget + self.spot_checks * self.verifier_fee


@dataclass(frozen=True)
class Reveal:
    """A solver's result (or failure), committed first and revealed later (step 3)."""

    trace_root: bytes
    steps: int
    final_root: bytes
    manifest_cid: str = ""
    result_cid: str = ""
    salt: bytes = field(default_factory=lambda: os.urandom(32))
    failed: bool = False

    def as_tuple(self) -> tuple[Any, ...]:
        """The TaskMarket.Reveal tuple."""
        return (
            self.failed, self.trace_root, self.steps, self.final_root,
            self.manifest_cid, self.result_cid, self.salt,
        )  # fmt: skip

    def commitment(self, task_id: int, slot: int, solver: str) -> bytes:
        """keccak256(abi.encode(taskId, slot, solver, reveal)): binds the solver and the salt."""
        return keccak(
            abi_encode(
                ["uint256", "uint256", "address", REVEAL_TUPLE],
                [task_id, slot, to_checksum_address(solver), self.as_tuple()],
            )
        )


def spot_commitment(task_id: int, slot: int, verifier: str, agrees: bool, salt: bytes) -> bytes:
    """keccak256(abi.encode(taskId, slot, verifier, agrees, salt)), as TaskMarket.spotReveal checks."""
    return keccak(
        abi_encode(
            ["uint256", "uint256", "address", "bool", "bytes32"],
            [task_id, slot, to_checksum_address(verifier), agrees, salt],
        )
    )


def spot_index(seed: bytes, verifier: str, leaves: int) -> int:
    """TaskMarket.spotIndex off chain: 1 + keccak256(abi.encode(seed, verifier)) mod (leaves - 1).

    Each verifier address gets one interval, drawn independently of every other
    verifier's (so a set of verifiers samples intervals with replacement), from
    ``seed`` = TaskMarket.drawSeed: the reveal's seed hashed with the hash of the
    block after the reveal.
    """
    if leaves < 2:
        return 0
    h = keccak(abi_encode(["bytes32", "address"], [seed, to_checksum_address(verifier)]))
    return 1 + int.from_bytes(h, "big") % (leaves - 1)


def leaf_count(steps: int, commit_interval: int) -> int:
    """Leaves of a trace over ``steps`` steps: the initial root plus one per interval."""
    return 1 + -(-steps // commit_interval)


@dataclass(frozen=True)
class Deployment:
    """Where the protocol lives on one chain; written as JSON by ``gensyn contracts deploy``."""

    chain_id: int
    token: str
    staking: str
    market: str
    game: str
    governance: str
    deployer: str
    block: int
    compiler: str = "solc 0.8.37"

    def to_json(self) -> str:
        """Stable JSON text (sorted keys, trailing newline)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the deployment file atomically; returns its path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(p)
        return p

    @classmethod
    def read(cls, path: str | Path) -> Deployment:
        """Read a deployment file written by :meth:`write`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
            return cls(**data)
        except FileNotFoundError as exc:
            raise ChainConfigError(
                f"no deployment file at {str(p)!r}; run `gensyn contracts deploy`"
            ) from exc
        except (ValueError, TypeError) as exc:
            raise ChainConfigError(
                f"deployment file {str(p)!r} is malformed ({exc}); redeploy"
            ) from exc
