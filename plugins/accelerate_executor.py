"""The Accelerate executor: the task's training script, run on one rank under the REE.

It implements ``gensyn_execute_task`` and ``gensyn_verify_interval`` for
``framework="accelerate"``. A task of this kind is what ``gensyn launch
--remote`` ships: the script (``init_args["script"]``, a file of the bundle's
code) and its command line (``init_args["argv"]``); any other bundle file is
put beside it in the run's working folder.

The script runs in a child process of this interpreter, one rank, its
``Accelerator`` in the executor role. The ``RunRequest`` reaches it in one
variable (:data:`plugins._accel.run.RUN_ENV`): the REE settings,
the start checkpoint, the end step and the checkpoint cadence. The script's
``Accelerator`` stops it at ``end_step`` and writes the trace, the checkpoints
and the steps done (:mod:`plugins._accel.run`), from which this
plugin builds the RunResult: the torch executor's contract (a trace covering
``start_step..steps_done``, a root every ``root_every`` steps and one at the
end, checkpoints at the start, every ``checkpoint_every`` steps and at the end).
A script that raises, or ends before ``end_step``, is a deterministic failure of
the user's code: a failure commit (:func:`coordinator.tasks.failure_digest`)
with the script's traceback.

A dispute's traced step (``RunRequest.op_trace``, DESIGN.md "A dispute (Verde)",
level 3) and a test's adversary (``RunRequest.fault``) travel as the whole
request; the script's ``Accelerator`` runs the step under the tracer
(:mod:`plugins._accel.accelerator`; a step of several micro-batches with its
later ones fetched ahead) and the trace's paths, or why the step could not be
traced (``op_trace_error``: the step then stopped part way, or read batches that
could not be fetched before it started), come back in the result.

Layering note: nothing of accelerate is imported here; the script imports it.
:mod:`plugins._accel.run`, the protocol both sides share, is stdlib only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from coordinator.tasks import RunRequest, RunResult, TaskRunError
from gensyn_integrations.hookspecs import hookimpl
from plugins._accel.run import RESULT_FILE, RUN_ENV
from plugins._runs import check_ree_mode, failure_result, verify_interval
from ree._trace import Trace

__all__ = [
    "FRAMEWORK",
    "RESULT_FILE",
    "RUN_ENV",
    "gensyn_execute_task",
    "gensyn_verify_interval",
    "run_accelerate",
]

FRAMEWORK = "accelerate"
TIMEOUT_S = 3600.0


def _child_env(req: RunRequest, run: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENSYN_", "ACCELERATE_"))}
    # one CPU rank, whatever the machine's accelerate defaults say
    env.update({RUN_ENV: json.dumps(run), "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS":
                str(run["threads"]), "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"})  # fmt: skip
    return env


def run_accelerate(req: RunRequest) -> RunResult:
    """Run ``req``: the task's script on one rank until ``end_step``; return its trace and checkpoints."""
    spec = req.spec
    check_ree_mode(spec, "accelerate")
    if req.end_step < req.start_step or req.end_step > spec.steps:
        raise TaskRunError(f"end_step {req.end_step} is outside {req.start_step}..{spec.steps}")
    if req.op_trace is not None and req.end_step != req.start_step + 1:
        raise TaskRunError(
            f"an op trace covers one step; this request runs {req.start_step}..{req.end_step}"
        )
    script = str(spec.init_args.get("script", ""))
    argv = [str(a) for a in spec.init_args.get("argv", [])]
    if script not in spec.code:
        raise TaskRunError(f"init_args['script'] {script!r} is not one of the bundle's code files")
    out = req.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"  # the script's working folder: the bundle's files beside it
    work.mkdir(exist_ok=True)
    for f in sorted(req.bundle_dir.iterdir()):
        link = work / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    root_every = req.root_every or spec.commit_interval
    run = {
        "out_dir": str(out), "end_step": req.end_step, "root_every": root_every,
        "checkpoint_every": req.checkpoint_every or root_every, "seed": spec.seed,
        "threads": int(spec.init_args.get("threads", 1)), "start_step": req.start_step,
        "mode": spec.ree_mode,
        "start_checkpoint": str(Path(req.start_checkpoint).resolve()) if req.start_checkpoint else None,
        "request": None,
    }  # fmt: skip
    if req.op_trace is not None or req.fault:  # the script's Accelerator runs the step's scope
        whole = dataclasses.replace(req, out_dir=out, bundle_dir=req.bundle_dir.resolve())
        run["request"] = whole.to_json()
    (out / RESULT_FILE).unlink(missing_ok=True)
    try:
        proc = subprocess.run(  # noqa: S603 - this interpreter and the task's own script, no shell
            [sys.executable, str(work / script), *argv], cwd=work, env=_child_env(req, run),
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise TaskRunError(f"the script ran past {TIMEOUT_S:.0f}s") from e
    return _result(req, out, proc)


def _result(req: RunRequest, out: Path, proc: subprocess.CompletedProcess[str]) -> RunResult:
    path = out / RESULT_FILE
    if not path.is_file():
        raise TaskRunError(
            f"the script exited with {proc.returncode} before its Accelerator started a run "
            f"(is it built with gensyn_integrations.accelerate.Accelerator?): {proc.stderr[-2000:]}"
        )
    doc = json.loads(path.read_text())
    checkpoints = {int(k): Path(v) for k, v in doc["checkpoints"].items()}
    done = int(doc["steps_done"])
    losses = [float(x) for x in doc.get("losses", [])][-max(0, done - req.start_step) :]
    if doc["trace"] is None:
        raise TaskRunError(f"the script failed before its first root: {proc.stderr[-2000:]}")
    trace = Trace.from_json(doc["trace"])
    op_error = str(doc.get("op_trace_error") or "")
    if doc["complete"] and proc.returncode == 0:
        if trace.steps[0] != req.start_step:
            raise TaskRunError(f"the run started at step {trace.steps[0]}, not {req.start_step}")
        path = doc.get("op_trace")
        return RunResult(trace, checkpoints, trace.roots[-1], done, losses=losses,
                         op_trace=Path(path) if path else None, op_trace_error=op_error,
                         op_inputs={int(k): Path(v) for k, v in doc.get("op_inputs", {}).items()})  # fmt: skip
    if op_error:  # the traced step stopped on a tensor the tracer cannot link: no failure commit
        return RunResult(trace, checkpoints, trace.roots[-1], done, losses=losses,
                         op_trace_error=op_error)  # fmt: skip
    why = proc.stderr[-3000:] if proc.returncode else (
        f"the script ended after {done} optimizer steps, before step {req.end_step}: its loop "
        "must run at least the task's steps (the executor stops it there)\n"
    )  # fmt: skip
    kind = "ScriptError" if proc.returncode else "ScriptEndedEarly"
    return failure_result(trace, checkpoints, done, kind, why, losses)


@hookimpl
def gensyn_execute_task(task: Any, workdir: Path, config: Any) -> RunResult | None:
    """Run a ``framework="accelerate"`` RunRequest (DESIGN.md, "Data flow", step 3)."""
    if not isinstance(task, RunRequest) or task.framework != FRAMEWORK:
        return None
    return run_accelerate(task)


@hookimpl
def gensyn_verify_interval(
    task: Any, checkpoint: Path, start_step: int, end_step: int, workdir: Path, config: Any
) -> str | None:
    """Re-execute ``start_step..end_step`` of an accelerate task from ``checkpoint``; return the end root."""
    return verify_interval(run_accelerate, FRAMEWORK, task, checkpoint, start_step, end_step, workdir)
