"""The Reproducible Execution Environment (REE).

Deterministic setup, fingerprints, canonical hashing and Merkle trees, the state
schema, safe checkpoints, traces and the resumable sampler. This package needs
only torch, numpy and safetensors, so it runs alone on a GPU machine.

Names are imported lazily: ``import ree._errors`` (the root of the project's
error tree) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "GensynError": "ree._errors",
    "ReeError": "ree._errors",
    "ReeConfigError": "ree._errors",
    "NondeterminismError": "ree._errors",
    "StateSchemaError": "ree._errors",
    "MerkleError": "ree._errors",
    "ProofError": "ree._errors",
    "CheckpointError": "ree._errors",
    "UnsafeCheckpointError": "ree._errors",
    "RootMismatchError": "ree._errors",
    "TraceError": "ree._errors",
    # hashing and trees
    "canonical_json": "ree._encoding",
    "leaf_hash": "ree._encoding",
    "MerkleTree": "ree._merkle",
    "Proof": "ree._merkle",
    "merkle_root": "ree._merkle",
    "verify_proof": "ree._merkle",
    # state
    "StateTree": "ree._state",
    "capture_state": "ree._state",
    "restore_state": "ree._state",
    "restore_rng": "ree._state",
    "state_root": "ree._state",
    # checkpoints and traces
    "Checkpoint": "ree._checkpoint",
    "save_checkpoint": "ree._checkpoint",
    "load_checkpoint": "ree._checkpoint",
    "Trace": "ree._trace",
    # determinism and fingerprint
    "deterministic": "ree._determinism",
    "apply_determinism": "ree._determinism",
    "restore_determinism": "ree._determinism",
    "fingerprint": "ree._fingerprint",
    # data order
    "ReproducibleSampler": "ree._data",
    "SeededDataset": "ree._data",
    "KeyedIndex": "ree._data",
    "sample_seed": "ree._data",
    "permutation": "ree._data",
    "worker_init_fn": "ree._data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ree' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

