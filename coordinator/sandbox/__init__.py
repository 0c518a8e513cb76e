"""The sandbox that runs task code (DESIGN.md, "Trust boundaries").

:class:`Sandbox` runs a command as the unprivileged ``gensyn-task`` user, in
fresh namespaces with only ``lo``, under rlimits, in a scratch directory.
"""

from coordinator.sandbox._errors import (
    CpuTimeLimitError,
    FileSizeLimitError,
    MemoryLimitError,
    SandboxError,
    SandboxLimitError,
    SandboxSetupError,
    SandboxTimeoutError,
    TaskFailedError,
)
from coordinator.sandbox._sandbox import SANDBOX_SCRATCH, Limits, Sandbox, SandboxResult
from coordinator.sandbox._user import DEFAULT_USER, TaskUser, ensure_user, lookup_user

__all__ = [
    "DEFAULT_USER",
    "SANDBOX_SCRATCH",
    "CpuTimeLimitError",
    "FileSizeLimitError",
    "Limits",
    "MemoryLimitError",
    "Sandbox",
    "SandboxError",
    "SandboxLimitError",
    "SandboxResult",
    "SandboxSetupError",
    "SandboxTimeoutError",
    "TaskFailedError",
    "TaskUser",
    "ensure_user",
    "lookup_user",
]
