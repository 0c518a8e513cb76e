"""``gensyn devnet`` as a user runs it: a status table, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_gensyn_devnet_prints_its_table_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "gensyn_integrations", "devnet", "--dir", str(tmp_path),
           "--solvers", "1", "--verifiers", "0", "--referees", "1"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )  # noqa: S603
    out = b""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while b"Ctrl-C stops" not in out and time.monotonic() < deadline and proc.poll() is None:
            out += proc.stdout.readline()
        text = out.decode()
        pids = [
            int(p)
            for p in re.findall(r"(?:solver|referee)\s*│\s*0x[0-9a-fA-F]{40}\s*│\s*(\d+)", text)
        ]
        assert len(pids) == 2, text
        assert (tmp_path / "deployment.json").exists()
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=60)
        assert rc == 0, (rc, text, proc.stdout.read().decode())
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
