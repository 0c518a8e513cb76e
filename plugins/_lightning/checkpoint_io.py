"""A Lightning ``CheckpointIO`` that writes REE checkpoints: safetensors plus JSON, no pickles.

DESIGN.md, "Trust boundaries": Lightning's ``.ckpt`` is a pickle and never leaves
its machine; in the executor role Lightning saves through this class instead.
The file is an ordinary REE checkpoint (``ree.load_checkpoint`` reads it and
``gensyn ree root`` prints its root):

* the state tree captured by :class:`GensynTraceCallback` at save time is the
  tensor and value content, so the file's root is the trace's state root;
* Lightning's own bookkeeping (loop progress, epoch, callback states,
  hyper-parameters) travels as JSON in the checkpoint's ``extra``, outside the root;
* ``state_dict``, ``optimizer_states`` and ``lr_schedulers`` are not stored twice:
  loading rebuilds them from the tree and the skeletons kept in ``extra``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ree._checkpoint import load_checkpoint, save_checkpoint
from ree._encoding import dtype_name, is_plain, tensor_bytes
from ree._errors import CheckpointError, StateSchemaError
from ree._state import StateTree, fill, skeleton

TREE_KEY = "ree_tree"  # where the callback's state dict carries its captured StateTree
_REBUILT = ("state_dict", "optimizer_states", "lr_schedulers")


def _to_json(obj: Any, where: str) -> Any:
    """Lightning bookkeeping as JSON; small tensors become tagged base64, never pickles."""
    if isinstance(obj, Mapping):
        return {str(k): _to_json(v, f"{where}/{k}") for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return {
            "__tensor__": {
                "dtype": dtype_name(t.dtype),
                "shape": list(t.shape),
                "data": base64.b64encode(bytes(tensor_bytes(t))).decode("ascii"),
            }
        }
    if isinstance(obj, list | tuple):
        return [_to_json(v, f"{where}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    if is_plain(obj):
        return obj
    raise StateSchemaError(
        f"checkpoint entry {where!r} is a {type(obj).__name__} ({obj!r:.60}); REE checkpoints "
        "hold tensors and JSON only. Keep it out of hyper-parameters and callback state"
    )


def _from_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            spec = obj["__tensor__"]
            dtype = getattr(torch, spec["dtype"])
            raw = bytearray(base64.b64decode(spec["data"]))
            if not raw:
                return torch.empty(spec["shape"], dtype=dtype)
            return torch.frombuffer(raw, dtype=dtype).reshape(spec["shape"]).clone()
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


def _aliases(state_dict: Mapping[str, torch.Tensor], tree: StateTree) -> dict[str, str]:
    """``{alias: first name}`` for model tensors the tree holds once (tied weights)."""
    first: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out: dict[str, str] = {}
    for name, t in state_dict.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if f"model/{name}" in tree.leaves:
            first.setdefault(key, name)
        elif key in first:
            out[name] = first[key]
        else:
            raise CheckpointError(f"model tensor {name!r} is neither in the state tree nor tied")
    return out


class SafetensorsCheckpointIOMixin:
    """The behaviour of ``SafetensorsCheckpointIO``; mixed into each Lightning's ``CheckpointIO``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` as an REE checkpoint at ``path``."""
        tree = _find_tree(checkpoint)
        if tree is None:
            raise CheckpointError(
                "SafetensorsCheckpointIO writes the state that GensynTraceCallback captures; "
                "add GensynTraceCallback() to the Trainer's callbacks"
            )
        rebuild: dict[str, Any] = {"aliases": _aliases(checkpoint.get("state_dict", {}), tree)}
        opts = checkpoint.get("optimizer_states") or []
        if len(opts) > 1:
            raise StateSchemaError(
                "the REE state schema holds one optimizer; this run has "
                f"{len(opts)}: combine the parameter groups into one optimizer"
            )
        if opts:
            rebuild["optim_groups"] = [
                {
                    "params": g["params"],
                    "skeleton": skeleton(
                        f"optim/groups/{i}", {k: v for k, v in g.items() if k != "params"}
                    ),
                }
                for i, g in enumerate(opts[0]["param_groups"])
            ]
        scheds = checkpoint.get("lr_schedulers") or []
        if len(scheds) > 1:
            raise StateSchemaError(
                f"the REE state schema holds one LR scheduler; this run has {len(scheds)}"
            )
        if scheds:
            rebuild["sched"] = skeleton("sched", scheds[0])
        # which of the rebuilt keys Lightning wrote (an empty list still must come back:
        # its resume reads checkpoint["lr_schedulers"] even when there are none)
        rebuild["keys"] = [k for k in _REBUILT if k in checkpoint]
        rest = {k: v for k, v in checkpoint.items() if k not in _REBUILT}
        extra = {"lightning": _to_json(_without_tree(rest), "checkpoint"), "rebuild": rebuild}
        save_checkpoint(path, tree, extra=extra)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Any = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Read an REE checkpoint (root checked) back into Lightning's checkpoint dict."""
        ck = load_checkpoint(path)
        lightning = ck.extra.get("lightning")
        rebuild = ck.extra.get("rebuild")
        if not isinstance(lightning, dict) or not isinstance(rebuild, dict):
            raise CheckpointError(
                f"{str(path)!r} is an REE checkpoint without Lightning's loop state; resume it with "
                "ree.restore_state, or pass a checkpoint written by GensynTraceCallback"
            )
        out: dict[str, Any] = _from_json(lightning)
        leaves = ck.tree.leaves
        model = ck.tree.subtree("model/")
        out["state_dict"] = {**model, **{a: model[f] for a, f in rebuild["aliases"].items()}}
        if "optim_groups" in rebuild:
            state: dict[int, dict[str, Any]] = {}
            for name, v in ck.tree.subtree("optim/state/").items():
                idx, _, key = name.partition("/")
                state.setdefault(int(idx), {})[key] = v
            groups = [
                {**fill(g["skeleton"], leaves), "params": g["params"]}
                for g in rebuild["optim_groups"]
            ]
            out["optimizer_states"] = [{"state": state, "param_groups": groups}]
        if "sched" in rebuild:
            out["lr_schedulers"] = [fill(rebuild["sched"], leaves)]
        for key in rebuild.get(
            "keys", ["optimizer_states", "lr_schedulers"] if "optim_groups" in rebuild else []
        ):
            out.setdefault(key, [])
        for cb_state in (out.get("callbacks") or {}).values():
            if isinstance(cb_state, dict) and cb_state.get(TREE_KEY) == "in-file":
                cb_state[TREE_KEY] = ck.tree
        return out

    def remove_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Delete a checkpoint file."""
        Path(path).unlink(missing_ok=True)


def _find_tree(checkpoint: Mapping[str, Any]) -> StateTree | None:
    for cb_state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(cb_state, dict) and isinstance(cb_state.get(TREE_KEY), StateTree):
            return cb_state[TREE_KEY]
    return None


def _without_tree(rest: dict[str, Any]) -> dict[str, Any]:
    callbacks = {
        k: ({**v, TREE_KEY: "in-file"} if isinstance(v, dict) and TREE_KEY in v else v)
        for k, v in (rest.get("callbacks") or {}).items()
    }
    return {**rest, "callbacks": callbacks} if "callbacks" in rest else rest
