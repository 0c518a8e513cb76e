"""The GPU check script: its golden copy is in sync, and it runs (on CPU here)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.ree.strict.conftest import GOLDEN, REPO

SCRIPT = REPO / "bench" / "strict_gpu_check.py"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("strict_gpu_check", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_golden_copy_equals_committed_golden_roots() -> None:
    assert json.loads(GOLDEN.read_text()) == _load(SCRIPT).GOLDEN


@pytest.mark.slow
def test_script_passes_on_cpu() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--models", "mlp,gpt", "--no-control"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all strict roots match" in out.stdout
