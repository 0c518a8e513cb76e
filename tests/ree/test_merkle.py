"""Merkle trees: the shared vectors, proofs, promotion of odd nodes (DESIGN.md, normative)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ree._errors import MerkleError
from ree._merkle import MerkleTree, Proof, compute_root_from_proof, merkle_root, verify_proof

VECTORS = Path(__file__).resolve().parents[2] / "contracts" / "test-vectors" / "merkle.json"


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def reference_root(leaf_hashes: list[bytes]) -> bytes:
    """An independent definition: recursive pairing with promotion, written from the spec."""
    level = [_h(b"\x00" + struct.pack(">Q", i) + lh) for i, lh in enumerate(leaf_hashes)]
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level = [_h(b"\x01" + p[0] + p[1]) if len(p) == 2 else p[0] for p in pairs]
    return level[0]


hashes = st.binary(min_size=32, max_size=32)


def test_vectors_file_is_current() -> None:
    """The committed vectors are what the generator writes (regenerate: python tests/ree/merkle_vectors.py)."""
    from tests.ree.merkle_vectors import render

    assert VECTORS.read_text() == render()


def test_shared_vectors_verify() -> None:
    data = json.loads(VECTORS.read_text())
    ns = [c["n"] for c in data["cases"]]
    assert ns[:9] == list(range(1, 10))
    assert max(ns) > 1000
    for case in data["cases"]:
        root = bytes.fromhex(case["root"])
        for p in case["proofs"]:
            leaf = bytes.fromhex(p["leaf"])
            assert bytes.fromhex(p["leaf_hash"]) == _h(leaf)
            proof = Proof(p["index"], case["n"], _h(leaf), tuple(bytes.fromhex(s) for s in p["siblings"]))
            assert verify_proof(root, proof)
        if case["leaves"] is not None:
            lhs = [_h(bytes.fromhex(x)) for x in case["leaves"]]
            assert reference_root(lhs) == root


@given(st.lists(hashes, min_size=1, max_size=40))
def test_root_matches_reference(leaves: list[bytes]) -> None:
    assert merkle_root(leaves) == reference_root(leaves)


@given(st.lists(hashes, min_size=2, max_size=40), st.data())
def test_proof_for_i_fails_at_j(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    j = data.draw(st.integers(0, len(leaves) - 1).filter(lambda x: x != i))
    good = tree.proof(i)
    assert verify_proof(tree.root, good)
    moved = Proof(j, good.n, good.leaf_hash, good.siblings)
    assert not verify_proof(tree.root, moved)


@given(st.lists(hashes, min_size=1, max_size=40), st.data())
def test_mutated_proofs_fail(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    p = tree.proof(i)
    flipped_leaf = bytes([p.leaf_hash[0] ^ 1]) + p.leaf_hash[1:]
    assert not verify_proof(tree.root, Proof(i, p.n, flipped_leaf, p.siblings))
    if p.siblings:
        k = data.draw(st.integers(0, len(p.siblings) - 1))
        sibs = list(p.siblings)
        sibs[k] = bytes([sibs[k][0] ^ 0x80]) + sibs[k][1:]
        assert not verify_proof(tree.root, Proof(i, p.n, p.leaf_hash, tuple(sibs)))
        assert not verify_proof(tree.root, Proof(i, p.n, p.leaf_hash, p.siblings[:-1]))
    assert not verify_proof(tree.root, Proof(i, p.n, p.leaf_hash, (*p.siblings, b"\x00" * 32)))


@given(st.lists(hashes, min_size=1, max_size=40))
def test_n_and_n_plus_one_differ(leaves: list[bytes]) -> None:
    assert merkle_root(leaves) != merkle_root([*leaves, leaves[-1]])


@pytest.mark.parametrize("n", [3, 5, 7, 9, 13])
def test_odd_leaf_promoted_not_duplicated(n: int) -> None:
    leaves = [_h(bytes([i])) for i in range(n)]
    # Duplicating the last node (Bitcoin's rule) would make [.., x] and [.., x, x] collide.
    dup_style = [*leaves, leaves[-1]]
    assert merkle_root(leaves) != merkle_root(dup_style)
    # The promoted node is the last leaf's node itself, up the levels where it is alone.
    tree = MerkleTree(leaves)
    last = tree.proof(n - 1)
    assert len(last.siblings) < len(tree.proof(0).siblings) or n & (n - 1) == 0
    assert verify_proof(tree.root, last)


def test_two_leaves_by_hand() -> None:
    a, b = _h(b"a"), _h(b"b")
    la = _h(b"\x00" + (0).to_bytes(8, "big") + a)
    lb = _h(b"\x00" + (1).to_bytes(8, "big") + b)
    assert merkle_root([a, b]) == _h(b"\x01" + la + lb)
    assert merkle_root([a]) == la


def test_errors_name_the_problem() -> None:
    with pytest.raises(MerkleError, match="at least one leaf"):
        MerkleTree([])
    with pytest.raises(MerkleError, match="32 raw bytes"):
        MerkleTree([b"short"])
    with pytest.raises(MerkleError, match="out of range"):
        MerkleTree([_h(b"x")]).proof(1)
    with pytest.raises(MerkleError, match="out of range"):
        compute_root_from_proof(Proof(3, 3, _h(b"x"), ()))


def test_proof_json_round_trip() -> None:
    tree = MerkleTree([_h(bytes([i])) for i in range(6)])
    p = tree.proof(4)
    assert Proof.from_json(json.loads(json.dumps(p.to_json()))) == p
