"""The Solidity Merkle verifier accepts every proof in contracts/test-vectors/merkle.json
and rejects each mutated one, run on py-evm."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from coordinator.chain import ChainClient, Protocol, deploy_all
from ree._merkle import Proof, verify_proof

VECTORS = json.loads(
    (Path(__file__).resolve().parents[3] / "contracts/test-vectors/merkle.json").read_text()
)
PROOFS = [(c["n"], c["root"], pr) for c in VECTORS["cases"] for pr in c["proofs"]]


@pytest.fixture(scope="module")
def proto() -> Protocol:
    client = ChainClient.in_process()
    return Protocol(client, deploy_all(client, client.funder))


def _args(n: int, root: str, pr: dict[str, Any]) -> tuple[bytes, int, int, bytes, list[bytes]]:
    return (
        bytes.fromhex(root),
        n,
        pr["index"],
        bytes.fromhex(pr["leaf"]),
        [bytes.fromhex(s) for s in pr["siblings"]],
    )


def test_vectors_cover_promotion_cases() -> None:
    assert {c["n"] for c in VECTORS["cases"]} >= {1, 2, 3, 5, 7, 1025}
    assert len(PROOFS) >= 50


def test_accepts_every_vector(proto: Protocol) -> None:
    for n, root, pr in PROOFS:
        assert proto.verify_proof(*_args(n, root, pr)), (n, pr["index"])


def _flip(b: bytes, i: int = 0) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


MUTATIONS = {
    "root": lambda a: (_flip(a[0]), *a[1:]),
    "leaf": lambda a: (a[0], a[1], a[2], _flip(a[3]), a[4]),
    "index+1": lambda a: (a[0], a[1], (a[2] + 1) % a[1] if a[1] > 1 else 1, a[3], a[4]),
    "n+1": lambda a: (a[0], a[1] + 1, a[2], a[3], a[4]),
    "n-1": lambda a: (a[0], a[1] - 1, a[2], a[3], a[4]),
    "sibling": lambda a: (*a[:4], [_flip(a[4][0]), *a[4][1:]] if a[4] else [b"\0" * 32]),
    "drop sibling": lambda a: (*a[:4], a[4][:-1] if a[4] else [b"\0" * 32]),
    "extra sibling": lambda a: (*a[:4], [*a[4], b"\0" * 32]),
    "swap siblings": lambda a: (
        *a[:4],
        a[4][::-1] if len(a[4]) > 1 and a[4][0] != a[4][-1] else [*a[4], b"\1" * 32],
    ),
    "leaf is leaf_hash": lambda a: (a[0], a[1], a[2], a[3], a[4]),  # replaced below
    "index = n": lambda a: (a[0], a[1], a[1], a[3], a[4]),
}


# A wrong N can share a proof's path (n = 4 and n = 3 for leaf 0), so for N the
# contract must agree with the Python reference; N is never the prover's choice on
# chain (it comes from the committed step count).
ALWAYS_REJECTED = {
    "root",
    "leaf",
    "index+1",
    "sibling",
    "drop sibling",
    "extra sibling",
    "swap siblings",
    "index = n",
}


def _reference(args: tuple[bytes, int, int, bytes, list[bytes]]) -> bool:
    root, n, index, leaf, sibs = args
    return verify_proof(root, Proof(index, n, hashlib.sha256(leaf).digest(), tuple(sibs)))


@pytest.mark.parametrize("mutation", [m for m in MUTATIONS if m != "leaf is leaf_hash"])
def test_rejects_each_mutation(proto: Protocol, mutation: str) -> None:
    rejected = 0
    for n, root, pr in PROOFS:
        args = MUTATIONS[mutation](_args(n, root, pr))
        if args == _args(n, root, pr):
            continue
        on_chain = proto.verify_proof(*args)
        assert on_chain == _reference(args), (mutation, n, pr["index"])
        if mutation in ALWAYS_REJECTED:
            assert not on_chain, (mutation, n, pr["index"])
        rejected += not on_chain
    assert rejected > 0


def test_rejects_leaf_hash_passed_as_leaf(proto: Protocol) -> None:
    """The verifier hashes the leaf itself; passing the precomputed leaf_hash must fail (no second-preimage shortcut)."""
    for n, root, pr in PROOFS[:20]:
        a = _args(n, root, pr)
        assert not proto.verify_proof(a[0], a[1], a[2], bytes.fromhex(pr["leaf_hash"]), a[4])
