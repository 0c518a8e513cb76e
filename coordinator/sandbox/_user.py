"""The unprivileged user that task code runs as, and its one-time creation.

Task code never runs as root: root plus rlimits is no sandbox (NOTES.md). The
user ``gensyn-task`` is a system user with no home, no login shell and no
groups. :func:`ensure_user` creates it the first time a root process asks
(``useradd --system``); a process that is not root gets a
:class:`SandboxSetupError` saying how to create it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass

from coordinator.sandbox._errors import SandboxSetupError

DEFAULT_USER = "gensyn-task"


@dataclass(frozen=True)
class TaskUser:
    """The uid and gid that task code runs as."""

    name: str
    uid: int
    gid: int


def lookup_user(name: str = DEFAULT_USER) -> TaskUser | None:
    """The user ``name``, or None when it does not exist."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return TaskUser(name, entry.pw_uid, entry.pw_gid)


def useradd_command(name: str = DEFAULT_USER) -> list[str]:
    """The one-time setup command that creates the task user."""
    return ["useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]


def ensure_user(name: str = DEFAULT_USER, *, create: bool = True) -> TaskUser:
    """The task user ``name``, created with ``useradd --system`` when missing and we are root."""
    user = lookup_user(name)
    if user is None:
        if os.geteuid() != 0 or not create:
            raise SandboxSetupError(
                f"there is no user {name!r} to run task code as; create it once as root: "
                f"`sudo {' '.join(useradd_command(name))}`"
            )
        if shutil.which("useradd") is None:
            raise SandboxSetupError("useradd is not installed; install the `passwd` package")
        done = subprocess.run(useradd_command(name), capture_output=True, text=True, check=False)
        user = lookup_user(name)  # another process may have created it first (exit code 9)
        if user is None:
            raise SandboxSetupError(
                f"could not create the task user {name!r}: {done.stderr.strip() or done.returncode}"
            )
    if user.uid == 0 or user.gid == 0:
        raise SandboxSetupError(
            f"the task user {name!r} has uid {user.uid} and gid {user.gid}; it must not be root"
        )
    return user
