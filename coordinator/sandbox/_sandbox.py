"""Running task code in a sandbox (DESIGN.md, "Trust boundaries", normative).

Task code is someone else's code. :class:`Sandbox` runs one command:

* as the unprivileged user ``gensyn-task`` (created once, see :mod:`._user`),
  with no supplementary groups and ``no_new_privs``;
* in new network, mount, PID, IPC and UTS namespaces: only ``lo``, brought up,
  so nothing on the host's 127.0.0.1 (anvil, the store, a keystore daemon) is
  reachable; ``/root`` hidden; private ``/tmp``, ``/var/tmp`` and ``/dev/shm``;
* with rlimits on CPU time, address space, open files and file size;
* in a scratch directory, seen inside as ``/tmp/scratch`` (its working directory
  and ``$HOME``), which is the only place it can leave files; the host measures
  it about once a second and kills the task when all its files together pass
  ``Limits.disk_bytes`` (an rlimit caps one file, not their number).

A wall-clock limit kills the task and everything it started (the PID namespace
dies with its init). It needs root; see :func:`Sandbox.check_host`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.sandbox._errors import (
    CpuTimeLimitError,
    DiskLimitError,
    FileSizeLimitError,
    MemoryLimitError,
    SandboxError,
    SandboxSetupError,
    SandboxTimeoutError,
    TaskFailedError,
)
from coordinator.sandbox._stage2 import PRIVATE_TMP  # noqa: E402 - the stage-2 script is import-safe
from coordinator.sandbox._user import DEFAULT_USER, TaskUser, ensure_user

STAGE2 = Path(__file__).with_name("_stage2.py")
SANDBOX_SCRATCH = "/tmp/scratch"  # noqa: S108 - a path inside the sandbox's private /tmp
_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "bad_alloc", "can't allocate memory")
_TAIL = 4000
_DISK_POLL_S = 1.0  # how often the host measures a running task's scratch directory


@dataclass(frozen=True)
class Limits:
    """Resource limits of one task run."""

    cpu_s: int = 600
    memory_bytes: int = 8 << 30
    open_files: int = 1024
    file_size_bytes: int = 4 << 30
    wall_s: float = 3600.0
    tmpfs_bytes: int = 256 << 20
    disk_bytes: int = 64 << 30  # the scratch directory, all files together

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """The rlimits set in the task, by their :mod:`resource` names.

        The CPU hard limit is one second above the soft one: SIGXCPU first, then SIGKILL.
        """
        return {
            "RLIMIT_CPU": (self.cpu_s, self.cpu_s + 1),
            "RLIMIT_AS": (self.memory_bytes, self.memory_bytes),
            "RLIMIT_NOFILE": (self.open_files, self.open_files),
            "RLIMIT_FSIZE": (self.file_size_bytes, self.file_size_bytes),
            "RLIMIT_CORE": (0, 0),
        }


@dataclass
class SandboxResult:
    """How one task run ended, and what it printed (the last few KB)."""

    argv: list[str]
    scratch: Path
    returncode: int | None
    signal: int | None
    stdout: str
    stderr: str
    cpu_s: float
    wall_s: float
    limits: Limits
    timed_out: bool = False
    setup_error: str | None = None
    disk_exceeded: bool = False

    @property
    def ok(self) -> bool:
        """True when the task exited with status 0."""
        return (self.returncode == 0 and not self.timed_out and not self.disk_exceeded
                and self.setup_error is None)  # fmt: skip

    def check(self) -> SandboxResult:
        """Return self if the task succeeded; raise the error that says how it did not."""
        if self.setup_error:
            raise SandboxSetupError(f"the sandbox could not start {self.argv[0]!r}: {self.setup_error}")
        if self.ok:
            return self
        raise self.error()

    def error(self) -> TaskFailedError:
        """The error for a run that did not succeed."""
        lim, tail = self.limits, self.stderr[-800:]
        if self.disk_exceeded:
            return DiskLimitError(
                f"the task's files passed its disk limit of {lim.disk_bytes} bytes and it was "
                "killed with every process it started; raise Limits.disk_bytes if it needs more")
        if self.timed_out:
            return SandboxTimeoutError(
                f"the task ran past its wall-clock limit of {lim.wall_s}s and was killed with "
                f"every process it started; raise Limits.wall_s if it needs longer. stderr: {tail}")
        if self.signal in (signal.SIGXCPU, signal.SIGKILL) and self.cpu_s >= lim.cpu_s - 0.05:
            return CpuTimeLimitError(
                f"the task used {self.cpu_s:.1f}s of CPU, over its limit of {lim.cpu_s}s, and was "
                "killed; raise Limits.cpu_s or make the task cheaper")
        if self.signal == signal.SIGXFSZ or "File too large" in self.stderr:  # Python ignores SIGXFSZ
            return FileSizeLimitError(
                f"the task wrote a file past its size limit of {lim.file_size_bytes} bytes and was "
                "killed; raise Limits.file_size_bytes")
        if self.returncode not in (None, 0) and any(s in self.stderr for s in _MEMORY_SIGNS):
            return MemoryLimitError(
                f"the task failed to allocate memory under its address-space limit of "
                f"{lim.memory_bytes} bytes (exit {self.returncode}); raise Limits.memory_bytes. "
                f"stderr: {tail}")
        how = f"signal {signal.Signals(self.signal).name}" if self.signal else f"exit {self.returncode}"
        return TaskFailedError(f"task {self.argv!r} failed ({how}). stderr: {tail}")


@dataclass
class Sandbox:
    """Runs commands as the task user in fresh namespaces, with limits (see the module docstring).

    ``hide`` paths are covered with an empty tmpfs; ``expose`` paths (the Python
    prefix by default, since pyenv lives under ``/root``) are bound back read-only.
    """

    user: str = DEFAULT_USER
    limits: Limits = field(default_factory=Limits)
    hide: tuple[str, ...] = ("/root",)
    expose: tuple[str, ...] = ()

    @staticmethod
    def check_host() -> None:
        """Raise :class:`SandboxSetupError` unless this process can build sandboxes."""
        if sys.platform != "linux":
            raise SandboxSetupError(f"the sandbox needs Linux namespaces; this is {sys.platform!r}")
        if os.geteuid() != 0:
            raise SandboxSetupError(
                "the sandbox needs root to create namespaces and drop to the task user; run the "
                "solver as root (it never runs task code as root)")

    def prepare(self) -> TaskUser:
        """The one-time setup: check the host and create the task user if missing."""
        self.check_host()
        return ensure_user(self.user)

    def run(self, argv: Sequence[str], scratch: str | os.PathLike[str], *,
            env: Mapping[str, str] | None = None, limits: Limits | None = None) -> SandboxResult:
        """Run ``argv`` in the sandbox with ``scratch`` as its only writable directory.

        ``argv[0]`` is resolved on the host's PATH when it is not absolute. The
        task gets a minimal environment (PATH, HOME, TMPDIR, LANG) plus ``env``.
        Returns a :class:`SandboxResult`; call :meth:`SandboxResult.check` to
        turn a failure into an error.
        """
        user = self.prepare()
        limits = limits or self.limits
        if not argv:
            raise SandboxError("nothing to run: argv is empty")
        exe = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])
        if exe is None:
            raise SandboxError(f"{argv[0]!r} is not on PATH; pass an absolute path")
        scratch = Path(scratch).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        _give_to(scratch, user)
        spec = {"argv": [exe, *argv[1:]], "scratch": str(scratch), "uid": user.uid,
                "gid": user.gid, "rlimits": limits.rlimits(), "hide": list(self.hide),
                "expose": self._exposed(), "tmpfs_bytes": limits.tmpfs_bytes,
                "env": self._env(env)}
        return _launch(spec, scratch, limits)

    def _exposed(self) -> list[str]:
        wanted = [*self.expose, sys.base_prefix, sys.prefix]
        out: list[str] = []
        for p in wanted:
            real = os.path.realpath(p)
            covered = (*self.hide, *PRIVATE_TMP)
            if any(real == h or real.startswith(h.rstrip("/") + "/") for h in covered) \
                    and real not in out and os.path.isdir(real):
                out.append(real)
        return out

    @staticmethod
    def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": SANDBOX_SCRATCH,
               "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's private tmpfs
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        env.update(extra or {})
        return env


def _give_to(scratch: Path, user: TaskUser) -> None:
    os.chown(scratch, user.uid, user.gid)
    for root, dirs, files in os.walk(scratch):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


def _launch(spec: dict[str, Any], scratch: Path, limits: Limits) -> SandboxResult:
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    timed_out = False
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(STAGE2), json.dumps(spec), str(write_fd)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(write_fd,),
                start_new_session=True, close_fds=True)
        finally:
            os.close(write_fd)
        deadline, disk_exceeded = start + limits.wall_s, False
        while True:
            try:
                proc.wait(timeout=max(0.0, min(_DISK_POLL_S, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                timed_out = time.monotonic() >= deadline
                disk_exceeded = not timed_out and disk_usage(scratch) > limits.disk_bytes
                if timed_out or disk_exceeded:
                    os.killpg(proc.pid, signal.SIGKILL)  # its init dies, and with it the namespace
                    proc.wait()
                    break
        with os.fdopen(read_fd, "rb") as status_pipe:
            lines = status_pipe.read().decode(errors="replace").splitlines()
        wall = time.monotonic() - start
        stdout, stderr = _tail(out), _tail(err)
    status: dict[str, Any] = {}
    for line in lines:
        try:
            status.update(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not status and not (timed_out or disk_exceeded):
        status["setup_error"] = f"the launcher exited with {proc.returncode}: {stderr[-800:]}"
    return SandboxResult(
        argv=list(spec["argv"]), scratch=scratch, returncode=status.get("exit"),
        signal=status.get("signal"), stdout=stdout, stderr=stderr,
        cpu_s=float(status.get("cpu_s", 0.0)), wall_s=wall, limits=limits,
        timed_out=timed_out, setup_error=status.get("setup_error"), disk_exceeded=disk_exceeded)


def disk_usage(top: Path) -> int:
    """Bytes the files under ``top`` take on disk (allocated blocks; links not followed)."""
    total = 0
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:  # removed while we walked
                continue
    return total


def _tail(f: Any) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - _TAIL))
    return str(f.read().decode(errors="replace"))

