"""Helpers shared by the storage tests: deterministic test data and the js-ipfs handle."""

from __future__ import annotations

import functools
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx


@functools.lru_cache(maxsize=16)
def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (every chunk differs, so no block is deduplicated)."""
    return random.Random(f"{seed}:{size}").randbytes(size)


@dataclass
class JsIpfs:
    """A running js-ipfs daemon: its RPC API URL, repo and process."""

    api_url: str
    repo: Path
    process: subprocess.Popen[bytes]
    log: Path

    def add(self, data: bytes, **params: str) -> str:
        """``POST /api/v0/add`` with ``params`` as given (no defaults added); returns the Hash."""
        response = httpx.post(
            f"{self.api_url}/api/v0/add",
            params=params,
            files={"file": ("blob", data, "application/octet-stream")},
            timeout=120,
        )
        response.raise_for_status()
        return str(response.json()["Hash"])


@dataclass
class FakeServer:
    """A TCP server on 127.0.0.1 run by a thread; ``url`` is its address."""

    url: str
    stop: Callable[[], None]
