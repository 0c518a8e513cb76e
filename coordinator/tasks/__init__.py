"""Tasks: the TaskSpec, deterministic bundles, runs, and the client-side task API.

``TaskClient`` is what the framework integrations call: ``submit`` a spec and
its files, ``wait`` for settlement, ``fetch_result`` (checked against the
committed root) and read the ``Receipt``.
"""

from coordinator.tasks._bundle import (
    INITIAL_CHECKPOINT,
    BlobStore,
    TaskBundle,
    build_bundle,
    get_json,
    get_verified,
    load_bundle,
    put_checked,
    put_json,
    unpack_bundle,
)
from coordinator.tasks._errors import (
    ResultVerificationError,
    TaskBundleError,
    TaskError,
    TaskRunError,
    TaskSpecError,
    TaskTimeoutError,
)
from coordinator.tasks._results import RunManifest, fetch_checkpoint, load_run, publish_run
from coordinator.tasks._run import (
    Executor,
    InProcessExecutor,
    RunRequest,
    RunResult,
    SubprocessExecutor,
    failure_digest,
)
from coordinator.tasks._spec import TaskSpec, parse_policy

__all__ = [
    "INITIAL_CHECKPOINT",
    "BlobStore",
    "TaskBundle",
    "Executor",
    "InProcessExecutor",
    "Receipt",
    "ResultVerificationError",
    "RunManifest",
    "RunRequest",
    "RunResult",
    "SlotReceipt",
    "SubprocessExecutor",
    "TaskBundleError",
    "TaskClient",
    "TaskError",
    "TaskRunError",
    "TaskSpec",
    "TaskSpecError",
    "TaskTimeoutError",
    "build_bundle",
    "failure_digest",
    "fetch_checkpoint",
    "get_json",
    "get_verified",
    "load_bundle",
    "load_run",
    "parse_policy",
    "publish_run",
    "put_checked",
    "put_json",
    "unpack_bundle",
]

from coordinator.tasks._client import Receipt, SlotReceipt, TaskClient  # noqa: E402
