"""The sandbox that runs task code (DESIGN.md, "Trust boundaries").

:class:`Sandbox` runs a command as the unprivileged ``gensyn-task`` user, in
fresh namespaces with only ``lo``, under rlimits, in a scratch directory;
:class:`SandboxedExecutor` is how a node runs task code in it.
"""

from coordinator.sandbox._errors import (
    CpuTimeLimitError,
    DiskLimitError,
    FileSizeLimitError,
    MemoryLimitError,
    SandboxError,
    SandboxLimitError,
    SandboxSetupError,
    SandboxTimeoutError,
    TaskFailedError,
)
from coordinator.sandbox._executor import SandboxedExecutor
from coordinator.sandbox._sandbox import SANDBOX_SCRATCH, Limits, Sandbox, SandboxResult
from coordinator.sandbox._user import DEFAULT_USER, TaskUser, ensure_user, lookup_user

__all__ = [
    "DEFAULT_USER",
    "SANDBOX_SCRATCH",
    "CpuTimeLimitError",
    "DiskLimitError",
    "FileSizeLimitError",
    "Limits",
    "MemoryLimitError",
    "Sandbox",
    "SandboxError",
    "SandboxLimitError",
    "SandboxResult",
    "SandboxSetupError",
    "SandboxTimeoutError",
    "SandboxedExecutor",
    "TaskFailedError",
    "TaskUser",
    "ensure_user",
    "lookup_user",
]
