"""Several processes share one LocalStore: overlapping writers, and gc running meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.storage import CHUNK_SIZE, LocalStore, compute_cid

_COMMON = r"""
import random, sys, json, time
from pathlib import Path
from coordinator.storage import LocalStore, CHUNK_SIZE

def chunk(i):
    return random.Random(f"chunk:{i}").randbytes(CHUNK_SIZE)

def obj(k):
    # Objects overlap: each shares two of its three full chunks with its neighbours.
    return chunk(k % 5) + chunk((k + 1) % 5) + chunk((k + 2) % 5) + bytes([k]) * (1000 + k)

start = Path(sys.argv[1]).parent / "go"
while not start.exists():
    time.sleep(0.005)
store = LocalStore(sys.argv[1])
"""

WRITER = (
    _COMMON
    + r"""
worker = int(sys.argv[2])
out = []
for round_ in range(2):
    for j in range(8):
        k = (j + worker) % 8
        out.append([k, store.put(obj(k), pin=k % 2 == 0)])
print(json.dumps(out))
"""
)

COLLECTOR = (
    _COMMON
    + r"""
stop = Path(sys.argv[1]).parent / "stop"
runs = 0
while not stop.exists():
    store.gc()
    runs += 1
print(json.dumps(runs))
"""
)


def _obj(k: int) -> bytes:
    import random

    def chunk(i: int) -> bytes:
        return random.Random(f"chunk:{i}").randbytes(CHUNK_SIZE)

    return chunk(k % 5) + chunk((k + 1) % 5) + chunk((k + 2) % 5) + bytes([k]) * (1000 + k)


@pytest.mark.slow
def test_four_writers_and_a_collector_share_one_store(tmp_path: Path) -> None:
    path = tmp_path / "store"  # made by the workers themselves, racing
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(4)
    ]
    collector = subprocess.Popen(
        [sys.executable, "-c", COLLECTOR, str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)  # let every process import and wait at the start line
        (tmp_path / "go").touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            results.append(json.loads(out))
        (tmp_path / "stop").touch()
        out, err = collector.communicate(timeout=60)
        assert collector.returncode == 0, err.decode()
        assert json.loads(out) >= 1
    finally:
        for proc in [*procs, collector]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):  # closed even when an assert cut communicate short
                if pipe is not None:
                    pipe.close()

    store = LocalStore(path)
    expected = {k: compute_cid(_obj(k)) for k in range(8)}
    for result in results:
        assert len(result) == 16
        for k, cid in result:
            assert cid == expected[k]
    for k in range(0, 8, 2):  # the pinned ones survived every gc
        assert store.get(expected[k]) == _obj(k)
    assert sorted(store.pins()) == sorted(expected[k] for k in range(0, 8, 2))
    assert list((path / "tmp").iterdir()) == []
    store.gc()
    for k in range(1, 8, 2):
        assert not store.has(expected[k]) or any(expected[k] == expected[j] for j in range(0, 8, 2))
