"""``make demo`` runs the demo module: it must pass end to end on a short job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_passes_on_a_short_job(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gensyn_integrations.demo", "--steps", "12", "--commit-interval", "4",
         "--workdir", str(tmp_path)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "every root matches" in out.stdout
    assert "equals the committed root" in out.stdout
    assert "RootMismatchError" in out.stdout
    assert "UnsafeCheckpointError" in out.stdout
    assert "demo passed" in out.stdout
    assert sorted(p.name for p in (tmp_path / "solver").iterdir()) == [
        "step-00000004.safetensors", "step-00000008.safetensors", "step-00000012.safetensors"]
