"""The root-side launcher that builds the sandbox and execs the task (stdlib only).

Run by :mod:`coordinator.sandbox._sandbox` as ``python -I -S _stage2.py SPEC STATUS_FD``,
as root. It:

1. unshares mount, network, PID, IPC and UTS namespaces, makes all mounts private,
   and brings ``lo`` up (a new network namespace starts with it down, NOTES.md);
2. forks the namespace's init (PID 1), which opens the scratch directory and the
   paths to expose before anything is hidden, mounts a fresh ``/proc``, hides the
   ``hide`` paths under empty tmpfs, binds the ``expose`` paths back read-only,
   puts private tmpfs on ``/tmp``, ``/var/tmp`` and ``/dev/shm``, and binds the
   scratch directory at ``/tmp/scratch``;
3. the init forks the task, which sets its rlimits, drops to the task user
   (no groups, ``no_new_privs``) and execs the command in the scratch directory;
4. the init reports the task's exit status and CPU time as one JSON line on
   STATUS_FD and exits, and the kernel kills whatever the task left behind.

If this launcher dies, the init gets SIGKILL (``PR_SET_PDEATHSIG``) and the
whole namespace goes with it.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import sys
from typing import Any

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SANDBOX_SCRATCH = "/tmp/scratch"  # noqa: S108 - a path inside the sandbox's private /tmp

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {src} on {target}")


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - each replaced by a private tmpfs


def _report(fd: int, **fields: Any) -> None:
    os.write(fd, (json.dumps(fields) + "\n").encode())


def _build_mounts(spec: dict[str, Any]) -> None:
    # opened in the new mount namespace: a bind mount from another namespace's mount is EINVAL
    scratch_fd = os.open(spec["scratch"], os.O_PATH | os.O_DIRECTORY)
    exposed = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in spec["expose"]]
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    size = int(spec["tmpfs_bytes"])
    for path in PRIVATE_TMP:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size}")
    for path in spec["hide"]:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    # after the covers, so a Python prefix under /root or /tmp (a venv in a CI clone) shows through
    for path, fd in exposed:
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.mkdir(SANDBOX_SCRATCH, 0o755)
    _mount(f"/proc/self/fd/{scratch_fd}", SANDBOX_SCRATCH, None, MS_BIND)


def _exec_task(spec: dict[str, Any], status_fd: int) -> None:
    """The task process: limits, privileges, exec. Never returns."""
    try:
        os.chdir(SANDBOX_SCRATCH)
        for name, value in spec["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (int(value[0]), int(value[1])))
        os.setgroups([])
        os.setgid(int(spec["gid"]))
        os.setuid(int(spec["uid"]))
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execve(spec["argv"][0], spec["argv"], spec["env"])  # noqa: S606 - exec of the task is the point
    except BaseException as e:  # anything before exec is a setup failure, reported as such
        _report(status_fd, setup_error=f"starting the task: {e}")
        os._exit(127)


def _init(spec: dict[str, Any], status_fd: int) -> int:
    """PID 1 of the sandbox: mounts, then runs the task and reports how it ended."""
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
        _build_mounts(spec)
    except OSError as e:
        _report(status_fd, setup_error=f"building the sandbox: {e}")
        return 126
    pid = os.fork()
    if pid == 0:
        _exec_task(spec, status_fd)
    _, status, usage = os.wait4(pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        _report(status_fd, signal=os.WTERMSIG(status), cpu_s=cpu, maxrss_kb=usage.ru_maxrss)
    else:
        _report(status_fd, exit=os.WEXITSTATUS(status), cpu_s=cpu, maxrss_kb=usage.ru_maxrss)
    return 0


def main() -> int:
    """Entry point: ``_stage2.py SPEC_JSON STATUS_FD``."""
    spec = json.loads(sys.argv[1])
    status_fd = int(sys.argv[2])
    os.set_inheritable(status_fd, False)
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC
                             | CLONE_NEWUTS), "unshare")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _lo_up()
    except OSError as e:
        _report(status_fd, setup_error=f"creating the namespaces: {e}")
        return 126
    pid = os.fork()
    if pid == 0:
        os._exit(_init(spec, status_fd))
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 125


if __name__ == "__main__":
    sys.exit(main())
