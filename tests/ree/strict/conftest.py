"""Fixtures for the strict-mode tests: the golden roots, and one run per process setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).with_name("golden_roots.json")

# (ATEN_CPU_CAPABILITY, intra-op threads) of each child process. torch falls back
# to the best level the CPU has when asked for more, so the report names the
# level each child actually ran with.
SETTINGS: tuple[tuple[str, int], ...] = (("default", 1), ("avx2", 2), ("avx512", 1))


@pytest.fixture(scope="session")
def golden() -> dict[str, str]:
    """The committed strict roots of every workload."""
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="session")
def child_reports() -> dict[tuple[str, int], dict[str, Any]]:
    """Run :mod:`tests.ree.strict._child` once per setting, concurrently; kill them all on exit."""
    procs = {}
    try:
        for cap, threads in SETTINGS:
            env = {
                **os.environ,
                "ATEN_CPU_CAPABILITY": cap,
                "PYTHONPATH": str(REPO),
                "HF_HUB_OFFLINE": "1",
            }
            procs[(cap, threads)] = subprocess.Popen(
                [sys.executable, "-m", "tests.ree.strict._child", str(threads)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        reports = {}
        for key, proc in procs.items():
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"child {key} failed:\n{err[-3000:]}"
            reports[key] = json.loads(out.strip().splitlines()[-1])
        return reports
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def one_thread() -> Any:
    """Run the test with one intra-op thread, and restore the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
