"""One executor run of an Accelerate script, as a solver, verifier or referee asks for it.

``plugins.accelerate_executor`` runs the task's script in a child process and
passes the ``RunRequest`` in one variable, :data:`RUN_ENV` (JSON). The
script's ``Accelerator`` (executor role) reads it at construction and then:

* takes its REE settings from the task: roots every ``root_every`` steps, the
  task's seed, thread count and REE mode (``TaskSpec.ree_mode``, ``"device"`` or
  ``"strict"``; what the script passes in code is its local default, on a solver
  the task decides);
* resumes from ``start_checkpoint`` (a bare REE checkpoint) once the model,
  optimizer, scheduler and training loader are prepared, or at the start of the
  first training pass, whichever comes first, with a new trace starting at the
  checkpoint's step and root;
* writes an REE checkpoint at the start, every ``checkpoint_every`` steps and
  at ``end_step``;
* stops the script when the root of ``end_step`` is taken, writing
  :data:`RESULT_FILE` (the trace, the checkpoints, the steps done) first, by
  raising :class:`RunComplete` (a ``SystemExit`` with status 0);
* if the script ends or fails earlier, writes the partial result at exit, so the
  executor can commit the failure (DESIGN.md, "Settlement");
* for a dispute's traced step (``RunRequest.op_trace``) or a test's adversary
  (``RunRequest.fault``), gets the whole request (``request``) and runs each
  step in a :class:`plugins._hf.steps.StepScope`; the trace's paths, or why the
  step could not be traced, go back in the result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_ENV = "GENSYN_EXECUTOR_RUN"
RESULT_FILE = "gensyn-run-result.json"


class RunComplete(SystemExit):
    """Raised inside the script when the run reached ``end_step``: the process exits with 0."""

    def __init__(self) -> None:
        super().__init__(0)


@dataclass
class ExecutorRun:
    """The run request as the script's ``Accelerator`` sees it."""

    out_dir: Path
    end_step: int
    root_every: int
    checkpoint_every: int
    seed: int
    threads: int
    start_checkpoint: Path | None = None
    start_step: int = 0
    mode: str = "device"
    request: dict[str, Any] | None = None  # RunRequest.to_json(), for a traced step or a fault
    loaded: bool = False
    done: bool = False
    checkpoints: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExecutorRun | None:
        """The run in :data:`RUN_ENV`, or None for an ordinary (local) run."""
        raw = (os.environ if env is None else env).get(RUN_ENV)
        if not raw:
            return None
        d = json.loads(raw)
        start = d.get("start_checkpoint")
        return cls(
            out_dir=Path(d["out_dir"]), end_step=int(d["end_step"]),
            root_every=int(d["root_every"]), checkpoint_every=int(d["checkpoint_every"]),
            seed=int(d["seed"]), threads=int(d["threads"]),
            start_checkpoint=Path(start) if start else None, start_step=int(d.get("start_step", 0)),
            mode=str(d.get("mode", "device")), request=d.get("request"),
        )  # fmt: skip

    def to_env(self) -> str:
        """The JSON the executor puts in :data:`RUN_ENV`."""
        return json.dumps({
            "out_dir": str(self.out_dir), "end_step": self.end_step, "root_every": self.root_every,
            "checkpoint_every": self.checkpoint_every, "seed": self.seed, "threads": self.threads,
            "start_checkpoint": str(self.start_checkpoint) if self.start_checkpoint else None,
            "start_step": self.start_step, "mode": self.mode, "request": self.request,
        })  # fmt: skip

    def checkpoint_path(self, step: int) -> Path:
        """Where the checkpoint of ``step`` goes."""
        return self.out_dir / f"step-{step:08d}.safetensors"

    def write_result(self, trace: Any, steps_done: int, losses: list[float],
                     op_trace: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """Write :data:`RESULT_FILE`: the trace so far, the checkpoints, the steps done.

        ``op_trace``: the traced step's ``op_trace`` (path), ``op_inputs`` and
        ``op_trace_error``, as the RunResult carries them.
        """
        doc = {"trace": trace.to_json() if trace.steps else None, "steps_done": steps_done,
               "complete": self.done, "checkpoints": {str(k): v for k, v in self.checkpoints.items()},
               "losses": losses, **(op_trace or {})}  # fmt: skip
        tmp = self.out_dir / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.out_dir / RESULT_FILE)
