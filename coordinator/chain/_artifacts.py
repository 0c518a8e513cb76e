"""The compiled contracts: ABI and bytecode JSON committed under ``contracts/artifacts/``.

``node contracts/compile.js`` writes them and ``--check`` proves they match the sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from coordinator.chain._errors import ChainConfigError

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"


@dataclass(frozen=True)
class Artifact:
    """One contract's ABI and creation bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str


@cache
def load_artifact(name: str, *, test: bool = False) -> Artifact:
    """The artifact of contract ``name`` (test-only contracts live in ``artifacts/test``)."""
    path = ARTIFACTS_DIR / ("test" if test else "") / f"{name}.json"
    if not path.is_file():
        raise ChainConfigError(
            f"no compiled artifact for {name!r} at {path}; run `node contracts/compile.js`"
        )
    data = json.loads(path.read_text())
    return Artifact(name=name, abi=data["abi"], bytecode=data["bytecode"])


def all_abis() -> list[list[dict[str, Any]]]:
    """Every artifact's ABI, for decoding reverts that bubble up through other contracts."""
    paths = sorted(ARTIFACTS_DIR.glob("*.json")) + sorted(ARTIFACTS_DIR.glob("test/*.json"))
    return [json.loads(p.read_text())["abi"] for p in paths]
