// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice The normative Merkle tree of DESIGN.md ("Merkle trees"), on the sha256 precompile.
///   leaf_hash = sha256(leaf); node(leaf i) = sha256(0x00 || uint64_be(i) || leaf_hash);
///   inner = sha256(0x01 || left || right); an odd last node is promoted unchanged.
/// A proof lists siblings from the leaf up and skips promoted levels; the side of
/// each sibling follows from (index, n). Mirrors ree/_merkle.py `compute_root_from_proof`.
library MerkleVerifier {
    /// @notice The root a proof implies, and whether the proof is well formed for (index, n).
    function computeRoot(bytes32 leaf, uint256 index, uint256 n, bytes32[] calldata siblings)
        internal
        pure
        returns (bytes32 h, bool ok)
    {
        if (index >= n || n > type(uint64).max) return (bytes32(0), false);
        h = sha256(abi.encodePacked(bytes1(0x00), uint64(index), sha256(abi.encodePacked(leaf))));
        uint256 idx = index;
        uint256 width = n;
        uint256 k;
        while (width > 1) {
            if (idx & 1 == 1 || idx + 1 < width) {
                if (k >= siblings.length) return (bytes32(0), false);
                h = idx & 1 == 1
                    ? sha256(abi.encodePacked(bytes1(0x01), siblings[k], h))
                    : sha256(abi.encodePacked(bytes1(0x01), h, siblings[k]));
                ++k;
            }
            idx >>= 1;
            width = (width + 1) >> 1;
        }
        return (h, k == siblings.length);
    }

    /// @notice True when `leaf` is leaf `index` of the tree committed as (root, n).
    function verify(bytes32 root, uint256 n, uint256 index, bytes32 leaf, bytes32[] calldata siblings)
        internal
        pure
        returns (bool)
    {
        (bytes32 h, bool ok) = computeRoot(leaf, index, n, siblings);
        return ok && h == root;
    }

    /// @notice The root of the tree whose leaf hashes are sha256 of `encodings` (a state tree:
    /// each encoding is a canonical state leaf, DESIGN.md "The state schema"). Empty: bytes32(0).
    function rootOfEncodings(bytes[] calldata encodings) internal pure returns (bytes32) {
        uint256 width = encodings.length;
        if (width == 0) return bytes32(0);
        bytes32[] memory level = new bytes32[](width);
        for (uint256 i; i < width; ++i) {
            level[i] = sha256(abi.encodePacked(bytes1(0x00), uint64(i), sha256(encodings[i])));
        }
        while (width > 1) {
            uint256 half = (width + 1) >> 1;
            for (uint256 i; i < width >> 1; ++i) {
                level[i] = sha256(abi.encodePacked(bytes1(0x01), level[2 * i], level[2 * i + 1]));
            }
            if (width & 1 == 1) level[half - 1] = level[width - 1]; // promoted unchanged
            width = half;
        }
        return level[0];
    }
}
