"""Runs: what a node asks an executor plugin to do, and what comes back.

A :class:`RunRequest` is the ``task`` argument of the ``gensyn_execute_task``
hook: the spec, the unpacked bundle, the REE checkpoint to start from, the
steps to run, and how often to take roots and write checkpoints. Solvers run a
whole task (roots every ``commit_interval``); dispute parties recompute
per-step roots inside an interval; the referee re-executes one step. Task
code is someone else's code, so nodes run it in a subprocess
(:class:`SubprocessExecutor`); tests may run it in process.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from coordinator.tasks._errors import TaskRunError
from coordinator.tasks._spec import TaskSpec
from ree._trace import Trace


@dataclass
class RunRequest:
    """Run ``spec`` from ``start_checkpoint`` (None: the bundle's initial state) to ``end_step``."""

    spec: TaskSpec
    bundle_dir: Path
    out_dir: Path
    start_checkpoint: Path | None = None
    start_step: int = 0
    end_step: int = 0
    root_every: int = 0  # 0: the spec's commit_interval
    checkpoint_every: int = 0  # 0: at every root
    fault: dict[str, Any] = field(default_factory=dict)  # adversary hooks, used by the tests
    # Dispute level 3: record the operator trace of the one step start_step -> end_step and keep
    # the inputs of these op indices (None: no trace). An executor that cannot trace returns
    # its result without ``op_trace``; the parties then fall back to the whole step.
    op_trace: list[int] | None = None

    @property
    def framework(self) -> str:
        """The executor plugin that runs it."""
        return self.spec.framework

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, for a subprocess."""
        d = asdict(self)
        d["spec"] = self.spec.to_json()
        for k in ("bundle_dir", "out_dir", "start_checkpoint"):
            d[k] = None if d[k] is None else str(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunRequest:
        """Inverse of :meth:`to_json`."""
        d = dict(d)
        d["spec"] = TaskSpec.from_json(d["spec"])
        for k in ("bundle_dir", "out_dir", "start_checkpoint"):
            d[k] = None if d[k] is None else Path(d[k])
        return cls(**d)


@dataclass
class RunResult:
    """What a run produced: the trace, its checkpoints, and a failure if the user's code raised.

    ``trace`` covers ``start_step..steps_done`` with a root every ``root_every``
    steps and one at the end. For a failure, the last leaf is ``error_digest``.
    """

    trace: Trace
    checkpoints: dict[int, Path]
    final_root: str
    steps_done: int
    failed: bool = False
    error_type: str = ""
    error_digest: str = ""
    traceback: str = ""
    losses: list[float] = field(default_factory=list)
    op_trace: Path | None = None  # the step's operator trace (canonical JSON), when requested
    op_inputs: dict[int, Path] = field(default_factory=dict)  # kept op inputs (safetensors)
    op_trace_error: str = ""  # why the step could not be traced (the parties use the whole step)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, for a subprocess."""
        return {
            "trace": self.trace.to_json(), "checkpoints": {str(k): str(v) for k, v in self.checkpoints.items()},
            "final_root": self.final_root, "steps_done": self.steps_done, "failed": self.failed,
            "error_type": self.error_type, "error_digest": self.error_digest,
            "traceback": self.traceback, "losses": self.losses,
            "op_trace": None if self.op_trace is None else str(self.op_trace),
            "op_inputs": {str(k): str(v) for k, v in self.op_inputs.items()},
            "op_trace_error": self.op_trace_error,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunResult:
        """Inverse of :meth:`to_json`."""
        return cls(
            trace=Trace.from_json(d["trace"]),
            checkpoints={int(k): Path(v) for k, v in d["checkpoints"].items()},
            final_root=d["final_root"], steps_done=int(d["steps_done"]), failed=bool(d["failed"]),
            error_type=d["error_type"], error_digest=d["error_digest"], traceback=d["traceback"],
            losses=[float(x) for x in d["losses"]],
            op_trace=None if d.get("op_trace") is None else Path(d["op_trace"]),
            op_inputs={int(k): Path(v) for k, v in d.get("op_inputs", {}).items()},
            op_trace_error=d.get("op_trace_error", ""),
        )  # fmt: skip


class Executor(Protocol):
    """Runs a :class:`RunRequest` and returns its :class:`RunResult`."""

    def run(self, request: RunRequest) -> RunResult: ...  # noqa: D102


class InProcessExecutor:
    """Calls ``gensyn_execute_task`` on a plugin manager in this process (tests, the referee of a tiny step)."""

    def __init__(self, pm: Any, config: Any = None) -> None:
        self.pm, self.config = pm, config

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request`` through the first plugin that takes its framework."""
        request.out_dir.mkdir(parents=True, exist_ok=True)
        res = self.pm.hook.gensyn_execute_task(
            task=request, workdir=request.out_dir, config=self.config
        )
        if res is None:
            raise TaskRunError(
                f"no executor plugin runs framework {request.framework!r}; install the plugin "
                "that provides it (gensyn plugins list)"
            )
        if not isinstance(res, RunResult):
            raise TaskRunError(
                f"the executor for {request.framework!r} returned {type(res).__name__}, not a RunResult"
            )
        return res


class SubprocessExecutor:
    """Runs each request in a fresh process: ``argv + [request.json, result.json]``.

    The face supplies ``argv`` (it builds the plugin manager there), for example
    ``[sys.executable, "-m", "gensyn_integrations._cli.node", "--exec"]``.
    """

    def __init__(self, argv: Sequence[str] | None = None, *, timeout: float | None = None) -> None:
        self.argv = list(argv or [sys.executable, "-m", "gensyn_integrations._cli.node", "--exec"])
        self.timeout = timeout

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request`` in a child process and read its result."""
        request.out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="gensyn-run-") as tmp:
            req, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
            req.write_text(json.dumps(request.to_json()))
            proc = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
                [*self.argv, str(req), str(out)], capture_output=True, text=True,
                timeout=self.timeout, check=False,
            )  # fmt: skip
            if proc.returncode != 0 or not out.exists():
                raise TaskRunError(
                    f"the executor process exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}"
                )
            return RunResult.from_json(json.loads(out.read_text()))


FAILURE_TAG = b"gensyn-failure/1"


def failure_digest(step: int) -> str:
    """The last trace leaf of a failure commit: the user's code raised at optimizer step ``step``.

    It names only the step, so every honest machine derives the same digest
    whatever the exception's message holds (addresses, paths).
    """
    return hashlib.sha256(FAILURE_TAG + int(step).to_bytes(8, "big")).hexdigest()
