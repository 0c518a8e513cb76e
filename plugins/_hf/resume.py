"""Resume a Trainer from a bare REE checkpoint: the form that crosses machines.

A solver's segments, a verifier's interval and a referee's single step start
from an REE checkpoint (safetensors plus canonical JSON; DESIGN.md, "Trust
boundaries"), never from a Trainer's ``checkpoint-N/`` folder with its pickles.
The Trainer resumes only from such a folder, so :func:`resume_folder` writes
the smallest one it accepts: ``trainer_state.json`` (the global step and
``GensynCallback``'s saved state) next to the REE checkpoint. No weights file
goes there: ``GensynTrainer`` skips the Trainer's own model load for such a
folder, and ``GensynCallback.on_train_begin`` restores model, optimizer,
scheduler, RNG and data cursor from the REE checkpoint and checks its root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from plugins._hf.settings import REE_FILE
from ree._checkpoint import load_checkpoint
from ree._errors import CheckpointError
from ree._trace import Trace

STATE_FILE = "trainer_state.json"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
            "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")  # fmt: skip


def is_ree_file(path: str | os.PathLike[str]) -> bool:
    """True for a path naming an REE checkpoint file rather than a checkpoint folder."""
    p = Path(path)
    return p.suffix == ".safetensors" and p.is_file()


def has_weights(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` holds a weights file the Trainer's own resume would load."""
    return any((Path(folder) / name).is_file() for name in _WEIGHTS)


def resume_folder(
    ree_file: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    commit_interval: int,
    state_fields: dict[str, Any] | None = None,
    callback_args: dict[str, Any] | None = None,
) -> Path:
    """Write a ``checkpoint-<step>/`` folder under ``dest`` that resumes from ``ree_file``.

    ``state_fields`` go into the ``TrainerState`` as they are (the run's
    ``train_batch_size``, ``logging_steps``..., which the Trainer compares with
    its arguments on resume). ``callback_args`` are the ``GensynCallback``'s
    constructor arguments, which a Trainer with
    ``restore_callback_states_from_checkpoint=True`` rebuilds it from.

    The trace continues the one in the checkpoint's extra JSON when it has one
    with this ``commit_interval``; otherwise a new trace starts at the
    checkpoint's step and root (what an executor's segment commits).
    """
    from transformers import TrainerState

    ck = load_checkpoint(ree_file)
    leaves = ck.tree.leaves
    try:
        step = int(leaves["ree/step"])
        cursor = {k: int(leaves[f"data/{k}"]) for k in ("epoch", "index", "seed")}
    except KeyError as e:
        raise CheckpointError(
            f"{str(ree_file)!r} lacks the leaf {e.args[0]!r}: it is not a training state "
            "(ree.capture_state writes one)"
        ) from None
    trace = _trace(ck.extra.get("trace"), commit_interval)
    if trace is None or trace.num_steps != step or trace.roots[-1] != ck.root:
        trace = Trace(commit_interval=commit_interval)
        trace.start(ck.root, step)
    folder = Path(dest) / f"checkpoint-{step}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copyfile(ree_file, folder / REE_FILE)
    saved: dict[str, Any] = {"trace": trace.to_json(), "step": step, "cursor": cursor,
                             "root": ck.root}  # fmt: skip
    state = TrainerState(global_step=step, **(state_fields or {}))
    entry = {"args": dict(callback_args or {}), "attributes": {"_gensyn_saved": saved}}
    state.stateful_callbacks = {"GensynCallback": entry}
    state.save_to_json(str(folder / STATE_FILE))
    return folder


def _trace(raw: Any, commit_interval: int) -> Trace | None:
    if not isinstance(raw, dict):
        return None
    try:
        t = Trace.from_json(raw)
    except Exception:  # a malformed trace in the extra JSON: start a new one
        return None
    return t if t.commit_interval == commit_interval and not t.final else None
