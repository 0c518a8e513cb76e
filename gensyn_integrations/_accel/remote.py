"""``gensyn launch --remote``: the client role for Accelerate scripts.

A script written with ``from gensyn_integrations.accelerate import Accelerator``
runs on the network unchanged::

    gensyn launch --remote --steps 12 --config gensyn.yaml train.py --max-steps 12

What travels (DESIGN.md, "Data flow", step 2): the script as source, its
arguments, any file named with ``--ship`` (data the script reads from its working
folder), and the task's REE settings from the config (``task.commit_interval``,
``ree.seed``, ``ree.threads``; device mode). ``--steps`` is the task's number
of optimizer steps: the solver's executor (``plugins.accelerate_executor``) runs
the script on ONE rank and stops it when the root of that step is taken, so the
script's own loop must run at least that far. The ``accelerate:`` section of the
config (the local ranks) is not shipped.

The client waits for the task to settle, downloads the final REE checkpoint,
checked against the root committed on chain, and writes it to ``--result``
(default ``gensyn-result.safetensors``): load it with
``accelerator.load_ree_checkpoint(path)`` after ``prepare``, or read its
``model/`` leaves with :func:`ree.load_checkpoint`. The receipt (task id, final
root, cost, fee burned, solvers, transactions) is printed as JSON.

A run on one rank equals a local ``python train.py ...`` run of the same script
in the executor role (one process, the same ``GENSYN_*`` settings) bit for bit.

As with ``GensynStrategy``: ``--task-id N`` re-attaches to task N (a configured
network; nothing is shipped, and the task must run a script of the same name),
and ``--retries K`` posts again a task whose every slot was slashed or expired.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gensyn_integrations._remote import RemoteReceipt
from gensyn_integrations.config import GensynConfig
from gensyn_integrations.errors import ConfigError, UsageError

FRAMEWORK = "accelerate"
WHO = "gensyn launch --remote"
ENTRY = "plugins.accelerate_executor:script"  # the executor runs the script itself; never called


@dataclass
class LaunchReceipt(RemoteReceipt):
    """What a remote launch bought (:class:`RemoteReceipt`), and where its checkpoint was written."""

    result: str = ""


def build_job(
    cfg: GensynConfig, script: str, script_args: Sequence[str], steps: int, ship: Sequence[str] = ()
) -> tuple[Any, dict[str, bytes]]:
    """The TaskSpec and bundle files of a remote launch; raises :class:`UsageError` for what cannot go."""
    from coordinator.tasks import TaskSpec

    path = Path(script)
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise UsageError(
            f"the training script {script!r} must be a .py file whose name is a Python module "
            "name, to travel as source; rename it"
        )
    if steps < 1:
        raise UsageError(
            f"--steps {steps}: a remote launch runs a fixed number of optimizer steps; pass --steps N"
        )
    files = {path.name: path.read_bytes()}
    data: list[str] = []
    for item in ship:
        p = Path(item)
        if not p.is_file():
            raise UsageError(f"--ship {item!r} is not a file; name each file the script reads")
        if p.name in files:
            raise UsageError(f"--ship {item!r}: a file named {p.name!r} is already in the job")
        files[p.name] = p.read_bytes()
        data.append(p.name)
    code = sorted(n for n in files if n.endswith(".py"))
    init_args = {"script": path.name, "argv": [str(a) for a in script_args],
                 "threads": int(cfg.ree.threads or 1)}  # fmt: skip
    spec = TaskSpec(
        entry=ENTRY, code=tuple(code), framework=FRAMEWORK, init_args=init_args,
        data=tuple(sorted(n for n in data if not n.endswith(".py"))), steps=int(steps),
        seed=int(cfg.ree.seed), ree_mode=str(cfg.ree.mode), commit_interval=int(cfg.task.commit_interval),
        policy="replicate:1", budget=int(cfg.task.budget), bond=int(cfg.task.bond),
        claim_window=600, work_window=600, reveal_window=600, challenge_window=5,
    )  # fmt: skip
    return spec, files


def launch_remote(
    cfg: GensynConfig,
    script: str,
    script_args: Sequence[str],
    *,
    steps: int,
    result: str | Path = "gensyn-result.safetensors",
    ship: Sequence[str] = (),
    timeout: float = 600.0,
    task_id: int | None = None,
    retries: int = 0,
) -> LaunchReceipt:
    """Ship the script, wait for the verified result, write the final checkpoint to ``result``.

    ``task_id``: re-attach to that task instead of posting (a configured network;
    nothing is shipped, and the task must run a script of this name).
    ``retries``: post again, this many times, a task whose every slot was slashed or expired.
    """
    from gensyn_integrations._remote import run_remote
    from ree._checkpoint import save_checkpoint

    if retries < 0:
        raise UsageError(f"--retries {retries}: pass 0 or more")
    if task_id is None:
        spec, files = build_job(cfg, script, script_args, steps, ship)
    else:
        spec, files = None, {}

    def posted(tid: int) -> None:
        sys.stderr.write(f"gensyn: posted task {tid}; if this process stops, re-attach with "
                         f"`gensyn launch --remote --task-id {tid} {script}` on the same network\n")  # fmt: skip
        sys.stderr.flush()

    res = run_remote(spec, files, frameworks=("torch", FRAMEWORK), timeout=timeout, who=WHO,
                     config=cfg, task_id=task_id, retries=retries, on_posted=posted)  # fmt: skip
    if task_id is not None:
        _check_reattach(task_id, script, res.spec)
    dest = Path(result)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the downloaded file went with the call's scratch folder: write the checked tree again
    save_checkpoint(dest, res.checkpoint.tree, extra=res.checkpoint.extra)
    return LaunchReceipt(**RemoteReceipt.fields_of(res), result=str(dest))


def _check_reattach(task_id: int, script: str, spec: Any) -> None:
    want = str(dict(spec.init_args or {}).get("script", ""))
    if spec.framework != FRAMEWORK or want != Path(script).name:
        raise ConfigError(
            f"task {task_id} runs {want or spec.framework!r}, not {Path(script).name!r}; re-attach "
            "with the script that posted it", key="task_id", source=WHO,
        )  # fmt: skip


def print_receipt(receipt: LaunchReceipt) -> None:
    """The receipt as one JSON line on stdout."""
    sys.stdout.write(json.dumps(asdict(receipt), sort_keys=True) + "\n")
