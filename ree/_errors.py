"""The root of the project's error tree.

Every error the project raises derives from :class:`GensynError`. Leaves also
inherit the builtin they stand for (``ValueError``, ``RuntimeError``...), the way
web3.py's ``Web3ValueError(Web3Exception, ValueError)`` does, so callers that
catch builtins keep working. A message says what was wrong, with the value, and
what to do.
"""

from __future__ import annotations


class GensynError(Exception):
    """Root of every error raised by gensyn-integrations."""


class ReeError(GensynError):
    """An error of the Reproducible Execution Environment."""


class NondeterminismError(ReeError, RuntimeError):
    """An operation or setting would make a run depend on more than its inputs."""


class StateSchemaError(ReeError, TypeError):
    """A value cannot be placed in a state tree (see DESIGN.md, the state schema)."""


class MerkleError(ReeError, ValueError):
    """A Merkle tree, proof or index is malformed."""


class ProofError(MerkleError):
    """An inclusion proof does not verify against the committed root."""


class CheckpointError(ReeError, ValueError):
    """An REE checkpoint is missing, truncated, malformed or fails its root."""


class UnsafeCheckpointError(CheckpointError):
    """The file is a pickle (torch.save, a Lightning .ckpt...): it is never unpickled."""


class RootMismatchError(CheckpointError):
    """The state in a checkpoint hashes to another root than the one expected."""


class TraceError(ReeError, ValueError):
    """A trace is malformed, out of order, or inconsistent with its commit interval."""


class ReeConfigError(ReeError, ValueError):
    """An REE setting (mode, seed, thread count...) is not valid."""
