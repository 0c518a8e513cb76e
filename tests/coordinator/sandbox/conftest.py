"""Fixtures for the sandbox tests: a sandbox (root only), and a keystore stand-in."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.sandbox import Limits, Sandbox


@pytest.fixture
def sandbox() -> Sandbox:
    """A sandbox with small limits; skips where this process cannot build one."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (namespaces and dropping to the task user)")
    return Sandbox(limits=Limits(cpu_s=20, memory_bytes=2 << 30, wall_s=60))


@pytest.fixture
def keystore() -> Iterator[Path]:
    """A secret only root can read (0600 in a root-owned 0700 dir) at a path the task can see."""
    folder = Path(tempfile.mkdtemp(prefix="gensyn-keystore-test-", dir="/var/lib"))
    try:
        folder.chmod(0o700)
        secret = folder / "key.json"
        secret.write_text("SECRET-KEY-MATERIAL")
        secret.chmod(0o600)
        yield secret
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def host_server() -> Iterator[int]:
    """A TCP server on the host's 127.0.0.1 that answers b"host" (stands for anvil or the store)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.sendall(b"host")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        sock.close()
        assert not thread.is_alive()
