"""Merkle trees over leaf hashes (DESIGN.md, "Merkle trees", normative).

* ``leaf = sha256(0x00 ‖ uint64_be(index) ‖ leaf_hash)``, where ``leaf_hash = sha256(encoding)``;
* ``node = sha256(0x01 ‖ left ‖ right)``;
* an odd node at the end of a level is promoted unchanged, never duplicated
  (duplication is the ambiguity behind CVE-2012-2459);
* a tree is committed with its leaf count N; hashes are raw 32 bytes, hex is for display.

A proof is the list of sibling hashes from the leaf up, skipping the levels
where the node was promoted. Which side each sibling sits on, and which levels
are skipped, follow from ``index`` and ``n`` alone, so a proof carries no
direction bits. :func:`verify_proof` is the reference the Solidity verifier mirrors.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ree._errors import MerkleError, ProofError

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_LEN = 32


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hash_leaf(index: int, leaf_hash: bytes) -> bytes:
    """The tree node for leaf ``index`` whose encoding hashes to ``leaf_hash``."""
    if not 0 <= index < 2**64:
        raise MerkleError(f"leaf index {index!r} does not fit in a uint64")
    _check_hash(leaf_hash, "leaf_hash")
    return _sha256(LEAF_PREFIX + struct.pack(">Q", index) + leaf_hash)


def hash_node(left: bytes, right: bytes) -> bytes:
    """An inner node over two children."""
    return _sha256(NODE_PREFIX + left + right)


def _check_hash(h: bytes, what: str) -> None:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_LEN:
        raise MerkleError(f"{what} must be {HASH_LEN} raw bytes, got {h!r:.80}")


def _levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    if not leaf_hashes:
        raise MerkleError("a Merkle tree needs at least one leaf (N = 0 has no root)")
    level = [hash_leaf(i, h) for i, h in enumerate(leaf_hashes)]
    levels = [level]
    while len(level) > 1:
        nxt = [hash_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])  # promoted, never duplicated
        levels.append(nxt)
        level = nxt
    return levels


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root of the tree over ``leaf_hashes`` (32 raw bytes)."""
    return _levels(leaf_hashes)[-1][0]


@dataclass(frozen=True)
class Proof:
    """An inclusion proof of leaf ``index`` in a tree of ``n`` leaves."""

    index: int
    n: int
    leaf_hash: bytes
    siblings: tuple[bytes, ...]

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict with hex strings."""
        return {
            "index": self.index,
            "n": self.n,
            "leaf_hash": self.leaf_hash.hex(),
            "siblings": [s.hex() for s in self.siblings],
        }

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Proof:
        """Inverse of :meth:`to_json`."""
        sibs = obj["siblings"]
        if not isinstance(sibs, list):
            raise MerkleError(f"proof siblings must be a list, got {sibs!r:.80}")
        return cls(
            index=int(obj["index"]),  # type: ignore[call-overload]
            n=int(obj["n"]),  # type: ignore[call-overload]
            leaf_hash=bytes.fromhex(str(obj["leaf_hash"])),
            siblings=tuple(bytes.fromhex(str(s)) for s in sibs),
        )


class MerkleTree:
    """A built tree: its root, its leaf count, and proofs for any leaf."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        for i, h in enumerate(leaf_hashes):
            _check_hash(h, f"leaf_hashes[{i}]")
        self.leaf_hashes: tuple[bytes, ...] = tuple(bytes(h) for h in leaf_hashes)
        self._levels = _levels(self.leaf_hashes)

    @property
    def n(self) -> int:
        """The leaf count N, committed with the root."""
        return len(self.leaf_hashes)

    @property
    def root(self) -> bytes:
        """The root, 32 raw bytes."""
        return self._levels[-1][0]

    def proof(self, index: int) -> Proof:
        """The inclusion proof of leaf ``index``."""
        if not 0 <= index < self.n:
            raise MerkleError(f"leaf index {index!r} is out of range for a tree of {self.n} leaves")
        siblings: list[bytes] = []
        idx = index
        for level in self._levels[:-1]:
            if idx % 2:
                siblings.append(level[idx - 1])
            elif idx + 1 < len(level):
                siblings.append(level[idx + 1])
            idx //= 2
        return Proof(index, self.n, self.leaf_hashes[index], tuple(siblings))


def compute_root_from_proof(proof: Proof) -> bytes:
    """Fold a proof up to the root it implies; raises :class:`ProofError` if malformed."""
    if not 0 <= proof.index < proof.n:
        raise ProofError(f"proof index {proof.index!r} is out of range for N = {proof.n!r}")
    h = hash_leaf(proof.index, proof.leaf_hash)
    idx, width, k = proof.index, proof.n, 0
    sibs = proof.siblings
    while width > 1:
        if idx % 2 or idx + 1 < width:
            if k >= len(sibs):
                raise ProofError(f"proof for leaf {proof.index} of {proof.n} is too short")
            _check_hash(sibs[k], f"siblings[{k}]")
            h = hash_node(sibs[k], h) if idx % 2 else hash_node(h, sibs[k])
            k += 1
        idx //= 2
        width = (width + 1) // 2
    if k != len(sibs):
        raise ProofError(
            f"proof for leaf {proof.index} of {proof.n} has {len(sibs)} siblings, expected {k}"
        )
    return h


def verify_proof(root: bytes, proof: Proof) -> bool:
    """True when ``proof`` shows its leaf at its index in the tree committed as (root, n)."""
    try:
        return compute_root_from_proof(proof) == bytes(root)
    except MerkleError:
        return False
