"""Build the shared Merkle vectors, ``contracts/test-vectors/merkle.json``.

Run ``python tests/ree/merkle_vectors.py`` to rewrite the file. The Python tests
check the committed file against :mod:`ree` and against an independent
recursive definition; the Solidity verifier checks the same file through the
chain tests ([B]).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ree._merkle import MerkleTree  # noqa: E402

PATH = ROOT / "contracts" / "test-vectors" / "merkle.json"
SMALL_N = range(1, 10)
LARGE_N = 1025  # odd at several levels: 1025 -> 513 -> 257 -> ... promotions on the way up
LARGE_PROOF_INDICES = (0, 1, 511, 512, 1023, 1024)


def leaf_data(i: int) -> bytes:
    """The 32-byte leaf value i (stands for an interval state root)."""
    return hashlib.sha256(f"gensyn merkle vector leaf {i}".encode()).digest()


def build() -> dict[str, object]:
    """The whole vector file as a JSON-ready dict."""
    cases = []
    for n in [*SMALL_N, LARGE_N]:
        data = [leaf_data(i) for i in range(n)]
        tree = MerkleTree([hashlib.sha256(d).digest() for d in data])
        indices = range(n) if n in SMALL_N else LARGE_PROOF_INDICES
        cases.append(
            {
                "n": n,
                "leaves": [d.hex() for d in data] if n in SMALL_N else None,
                "leaves_rule": "leaf i = sha256(utf8('gensyn merkle vector leaf ' + str(i)))",
                "root": tree.root.hex(),
                "proofs": [
                    {
                        "index": i,
                        "leaf": data[i].hex(),
                        "leaf_hash": tree.leaf_hashes[i].hex(),
                        "siblings": [s.hex() for s in tree.proof(i).siblings],
                    }
                    for i in indices
                ],
            }
        )
    return {
        "spec": (
            "DESIGN.md 'Merkle trees' (normative). leaf_hash = sha256(leaf); "
            "node(leaf i) = sha256(0x00 || uint64_be(i) || leaf_hash); "
            "inner = sha256(0x01 || left || right); an odd last node is promoted unchanged. "
            "Proof siblings go leaf to root and skip promoted levels; sides follow from index and n."
        ),
        "cases": cases,
    }


def render() -> str:
    """The file's exact text."""
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(render())
    print(f"wrote {PATH}")
