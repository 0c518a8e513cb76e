"""Task code in the sandbox cannot reach the host, read its secrets, or write outside scratch."""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from coordinator.sandbox import (
    CpuTimeLimitError,
    DiskLimitError,
    FileSizeLimitError,
    Limits,
    MemoryLimitError,
    Sandbox,
    SandboxError,
    SandboxSetupError,
    SandboxTimeoutError,
    ensure_user,
)

PY = sys.executable


def _py(sandbox: Sandbox, code: str, scratch: Path, limits: Limits | None = None):  # type: ignore[no-untyped-def]
    return sandbox.run([PY, "-I", "-c", code], scratch, limits=limits)


def test_a_torch_task_runs_unprivileged_and_writes_to_scratch(sandbox: Sandbox, tmp_path: Path) -> None:
    code = ("import os, torch; x = torch.arange(6.).reshape(2, 3); "
            "open('out.txt', 'w').write(f'{os.getuid()} {os.getcwd()} {(x @ x.T).sum().item()}')")
    result = sandbox.run([PY, "-c", code], tmp_path / "scratch").check()
    uid, cwd, total = (tmp_path / "scratch" / "out.txt").read_text().split()
    assert int(uid) == ensure_user().uid != 0
    assert cwd == "/tmp/scratch"
    assert float(total) == 83.0
    assert result.cpu_s > 0


def test_the_host_loopback_is_unreachable_but_lo_is_up(sandbox: Sandbox, tmp_path: Path,
                                                        host_server: int) -> None:
    with socket.create_connection(("127.0.0.1", host_server), timeout=5) as c:
        assert c.recv(4) == b"host"  # the server really is there, for the host
    code = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {host_server}), timeout=3)
    print("REACHED")
except OSError as e:
    print("refused", type(e).__name__)
own = socket.socket(); own.bind(("127.0.0.1", 0)); own.listen(1)
socket.create_connection(own.getsockname(), timeout=3)
print("lo up")
"""
    out = _py(sandbox, code, tmp_path).check().stdout
    assert "REACHED" not in out
    assert "refused ConnectionRefusedError" in out
    assert "lo up" in out


def test_a_root_only_secret_is_unreadable(sandbox: Sandbox, tmp_path: Path, keystore: Path) -> None:
    code = f"""
for path in ({str(keystore)!r}, "/root/.bashrc", "/etc/shadow"):
    try:
        print(open(path).read())
    except OSError as e:
        print(path, type(e).__name__)
"""
    out = _py(sandbox, code, tmp_path).check().stdout
    assert "SECRET" not in out
    assert f"{keystore} PermissionError" in out
    assert "/etc/shadow PermissionError" in out
    assert "/root/.bashrc FileNotFoundError" in out  # /root is hidden, not just closed


def test_nothing_can_be_written_outside_scratch(sandbox: Sandbox, tmp_path: Path) -> None:
    name = f"gensyn-escape-{uuid.uuid4().hex}"
    repo = Path(__file__).resolve().parents[3]
    targets = [str(repo / name), f"/etc/{name}", f"/var/tmp/{name}", f"/tmp/{name}",
               f"/dev/shm/{name}"]
    code = f"""
for path in {targets!r}:
    try:
        open(path, "w").write("x")
        print(path, "written")
    except OSError as e:
        print(path, type(e).__name__)
open("inside.txt", "w").write("ok")
"""
    out = _py(sandbox, code, tmp_path / "scratch").check().stdout
    assert (tmp_path / "scratch" / "inside.txt").read_text() == "ok"
    assert f"{repo / name} PermissionError" in out
    assert f"/etc/{name} PermissionError" in out
    for path in targets:  # the private /tmp, /var/tmp and /dev/shm vanished with the sandbox
        assert not os.path.exists(path), path


def test_a_cpu_burner_is_killed(sandbox: Sandbox, tmp_path: Path) -> None:
    result = _py(sandbox, "while True: pass", tmp_path, Limits(cpu_s=1, wall_s=30))
    with pytest.raises(CpuTimeLimitError, match="over its limit of 1s"):
        result.check()
    assert not result.timed_out
    assert result.cpu_s >= 0.9


def test_an_allocation_over_the_limit_fails(sandbox: Sandbox, tmp_path: Path) -> None:
    result = _py(sandbox, "x = bytearray(1 << 30)", tmp_path, Limits(memory_bytes=512 << 20))
    with pytest.raises(MemoryLimitError, match="address-space limit of 536870912"):
        result.check()
    assert _py(sandbox, "x = bytearray(64 << 20)", tmp_path, Limits(memory_bytes=512 << 20)).ok


def test_a_file_over_the_size_limit_kills_the_task(sandbox: Sandbox, tmp_path: Path) -> None:
    result = _py(sandbox, "open('big', 'wb').write(b'0' * (2 << 20))", tmp_path,
                 Limits(file_size_bytes=1 << 20))
    with pytest.raises(FileSizeLimitError, match="size limit of 1048576"):
        result.check()


def test_many_files_over_the_disk_limit_kill_the_task(sandbox: Sandbox, tmp_path: Path) -> None:
    # each file is under the file-size rlimit; together they pass the disk limit
    code = ("import itertools, time\n"
            "for i in itertools.count():\n"
            "    open(f'f{i}', 'wb').write(b'0' * (1 << 20))\n"
            "    time.sleep(0.01)\n")
    result = _py(sandbox, code, tmp_path / "big", Limits(disk_bytes=8 << 20,
                                                         file_size_bytes=2 << 20, wall_s=120))  # fmt: skip
    assert result.disk_exceeded
    assert not result.timed_out
    with pytest.raises(DiskLimitError, match="disk limit of 8388608 bytes"):
        result.check()
    code = "open('f', 'wb').write(b'0' * (1 << 20)); import time; time.sleep(2.5)"  # polled
    assert _py(sandbox, code, tmp_path / "small", Limits(disk_bytes=8 << 20)).ok


def test_open_files_are_limited(sandbox: Sandbox, tmp_path: Path) -> None:
    code = """
fs = []
try:
    while True:
        fs.append(open("/dev/null"))
except OSError as e:
    print(len(fs), e.errno)
"""
    n, errno = _py(sandbox, code, tmp_path, Limits(open_files=32)).check().stdout.split()
    assert int(n) < 32
    assert int(errno) == 24


def test_the_wall_clock_limit_kills_the_task_and_its_children(sandbox: Sandbox,
                                                               tmp_path: Path) -> None:
    marker = str(300 + uuid.uuid4().int % 600)  # tells this test's sleeper from any other
    code = ("import os, subprocess, time; "
            f"subprocess.Popen(['/bin/sleep', '{marker}'], start_new_session=True); time.sleep(300)")
    result = _py(sandbox, code, tmp_path, Limits(wall_s=1.5))
    assert result.timed_out
    with pytest.raises(SandboxTimeoutError, match="wall-clock limit of 1.5s"):
        result.check()
    uid = ensure_user().uid

    def left() -> list[str]:
        return [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == uid
                and _cmdline(p) == ["/bin/sleep", marker]]

    # the kernel kills a PID namespace's processes when its init exits; the SIGKILLs
    # land asynchronously, so allow them a moment (a bound on waiting, not a timing claim)
    for _ in range(100):
        if not left():
            break
        time.sleep(0.1)
    assert left() == [], "a task process outlived its sandbox"


def _cmdline(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode() for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _uid_of(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_a_non_root_caller_without_the_user_gets_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxSetupError, match="needs root"):
        Sandbox().prepare()
    with pytest.raises(SandboxSetupError, match="useradd --system"):
        ensure_user("gensyn-no-such-user")


def test_an_unknown_command_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="not on PATH"):
        sandbox.run(["no-such-command-xyz"], tmp_path)
