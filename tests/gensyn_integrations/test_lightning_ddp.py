"""GensynTraceCallback with DDPStrategy on 2 CPU processes (gloo): every rank records the same roots."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS, INTERVAL = 8, 2  # one epoch on each rank (lightning_ddp_app.STEPS_PER_EPOCH)
RUNS = ("lightning", 0), ("lightning", 1), ("pytorch_lightning", 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Launch the DDP app once (both ranks run every fit of RUNS); read each rank's trace of each run."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}  # fmt: skip
    for name in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK"):
        env.pop(name, None)  # the app must start its own ranks
    cmd = [sys.executable, "-m", "tests.gensyn_integrations.lightning_ddp_app", "--out", str(out),
           "--runs", ",".join(f"{f}:{s}" for f, s in RUNS), "--max-steps", str(STEPS),
           "--commit-interval", str(INTERVAL)]  # fmt: skip
    # its own process group: rank 1 is Lightning's child of rank 0, and both die with the group
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        log, _ = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, log.decode(errors="replace")[-3000:]
    found = {}
    for flavour, seed in RUNS:
        for rank in (0, 1):
            path = out / f"{flavour}-seed{seed}-rank{rank}.json"
            assert path.is_file(), (path.name, log.decode(errors="replace")[-3000:])
            found[flavour, seed, rank] = json.loads(path.read_text())
    return found


def test_every_rank_records_the_same_non_trivial_roots(traces: dict[tuple[str, int, int], dict[str, Any]]) -> None:
    r0, r1 = traces["lightning", 0, 0], traces["lightning", 0, 1]
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["optimizer_steps"] == STEPS
    assert r0["steps"] == list(range(0, STEPS + 1, INTERVAL))
    assert len(r0["roots"]) == STEPS // INTERVAL + 1
    assert len(set(r0["roots"])) == len(r0["roots"])  # every interval changed the state
    assert r0["final"]
    assert r0["roots"] == r1["roots"]


def test_another_seed_gives_other_roots_on_every_rank(traces: dict[tuple[str, int, int], dict[str, Any]]) -> None:
    a, b = traces["lightning", 1, 0], traces["lightning", 1, 1]
    assert a["roots"] == b["roots"]
    base = traces["lightning", 0, 0]["roots"]
    assert all(x != y for x, y in zip(a["roots"], base, strict=True))


def test_pytorch_lightning_ranks_record_the_same_roots_as_lightning(
    traces: dict[tuple[str, int, int], dict[str, Any]],
) -> None:
    base = traces["lightning", 0, 0]["roots"]
    assert traces["pytorch_lightning", 0, 0]["roots"] == base
    assert traces["pytorch_lightning", 0, 1]["roots"] == base
