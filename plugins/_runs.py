"""What the framework executors share about a run's result: failure commits and interval checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordinator.tasks import RunRequest, RunResult, TaskRunError, failure_digest
from ree._trace import Trace


def check_ree_mode(spec: Any, executor: str) -> None:
    """Refuse a task whose ``ree_mode`` the executor cannot run (strict mode trains in float32)."""
    if spec.ree_mode not in ("device", "strict"):
        raise TaskRunError(
            f"the {executor} executor runs ree_mode 'device' or 'strict', not {spec.ree_mode!r}"
        )
    if spec.ree_mode == "strict" and spec.precision != "fp32":
        raise TaskRunError(
            f"strict mode trains in float32; this task asks for precision {spec.precision!r}: "
            "post it with precision='fp32', or with ree_mode='device'"
        )


def failure_result(trace: Trace, checkpoints: dict[int, Path], done: int, error_type: str,
                   traceback: str, losses: list[float]) -> RunResult:  # fmt: skip
    """The failure commit of a run whose user code raised after ``done`` optimizer steps.

    The trace keeps its roots before ``done`` (at least the start root, leaf 0)
    and ends with the leaf :func:`coordinator.tasks.failure_digest` of step ``done + 1``.
    """
    digest = failure_digest(done + 1)
    keep = [(s, r) for s, r in zip(trace.steps, trace.roots_raw, strict=True) if s < done]
    if not keep:
        keep = [(trace.steps[0], trace.roots_raw[0])]
    steps = [s for s, _ in keep] + [done]
    roots = [r for _, r in keep] + [bytes.fromhex(digest)]
    t = Trace(commit_interval=trace.commit_interval, steps=steps, roots_raw=roots, final=True)
    return RunResult(t, checkpoints, digest, done, failed=True, error_type=error_type,
                     error_digest=digest, traceback=traceback, losses=losses)  # fmt: skip


def verify_interval(run: Callable[[RunRequest], RunResult], framework: str, task: Any,
                    checkpoint: Path, start_step: int, end_step: int, workdir: Path) -> str | None:  # fmt: skip
    """``gensyn_verify_interval`` for an executor whose whole run is ``run``.

    Re-executes ``start_step..end_step`` of ``task`` from ``checkpoint`` and returns
    the end root (a failure's digest); None when ``task`` is not ``framework``'s.
    """
    if not isinstance(task, RunRequest) or task.framework != framework:
        return None
    req = RunRequest(task.spec, task.bundle_dir, workdir, start_checkpoint=checkpoint,
                     start_step=start_step, end_step=end_step)  # fmt: skip
    res = run(req)
    return res.error_digest if res.failed else res.final_root
