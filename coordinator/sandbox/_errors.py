"""Errors of the sandbox that runs task code (DESIGN.md, "Trust boundaries")."""

from __future__ import annotations

from ree._errors import GensynError


class SandboxError(GensynError, RuntimeError):
    """Task code could not be run in the sandbox, or it did not finish cleanly."""


class SandboxSetupError(SandboxError, PermissionError):
    """The sandbox cannot be built here (not root, no task user, no namespaces)."""


class TaskFailedError(SandboxError):
    """The task exited with a non-zero status or died from a signal."""


class SandboxLimitError(TaskFailedError):
    """The task was stopped by one of its resource limits."""


class CpuTimeLimitError(SandboxLimitError):
    """The task used more CPU time than its limit."""


class MemoryLimitError(SandboxLimitError, MemoryError):
    """The task tried to allocate beyond its address-space limit."""


class FileSizeLimitError(SandboxLimitError):
    """The task wrote a file larger than its limit (killed by SIGXFSZ, or EFBIG where ignored)."""


class SandboxTimeoutError(SandboxLimitError, TimeoutError):
    """The task ran longer (wall clock) than its limit and was killed with all it started."""


class DiskLimitError(SandboxLimitError):
    """The task's scratch directory grew past its limit (all its files together)."""
