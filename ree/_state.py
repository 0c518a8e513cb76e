"""The state tree of one training state (DESIGN.md, "The state schema", normative).

:func:`capture_state` reads a model, optimizer, scheduler, grad scaler, the RNGs
and the data cursor into a :class:`StateTree` whose leaves carry exactly the
normative names; :func:`state_root` is its Merkle root. :func:`restore_state`
puts a tree back into live objects, using their own ``state_dict()`` as the
template for structure, so nothing but tensors and plain values is ever read.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ree._encoding import is_plain, leaf_hash
from ree._errors import CheckpointError, ReeConfigError, StateSchemaError
from ree._merkle import MerkleTree, Proof

Leaf = Any  # torch.Tensor or a plain value
MODES = ("device", "strict")

# Hashing threads: hashlib releases the GIL for large updates, so leaves hash in
# parallel; below this many bytes, the pool costs more than it saves.
_PARALLEL_MIN_BYTES = 4 << 20


def _leaf_nbytes(v: Leaf) -> int:
    return v.numel() * v.element_size() if isinstance(v, torch.Tensor) else 0


@dataclass
class StateTree:
    """Named leaves of one training state, and their Merkle tree.

    Leaves are ordered by the UTF-8 bytes of their names. Tensors are referenced,
    not copied: call :meth:`snapshot` before the live objects change if the tree
    must outlive the moment it was captured.
    """

    leaves: dict[str, Leaf]
    _tree: MerkleTree | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, v in self.leaves.items():
            if not isinstance(name, str) or not name:
                raise StateSchemaError(f"leaf names are non-empty strings, got {name!r}")
            if not isinstance(v, torch.Tensor) and not is_plain(v):
                raise StateSchemaError(
                    f"leaf {name!r} is a {type(v).__name__}; leaves are tensors or plain values"
                )
        self.leaves = dict(sorted(self.leaves.items(), key=lambda kv: kv[0].encode("utf-8")))

    @property
    def names(self) -> tuple[str, ...]:
        """Leaf names in tree order."""
        return tuple(self.leaves)

    @property
    def n(self) -> int:
        """The leaf count N."""
        return len(self.leaves)

    @property
    def merkle(self) -> MerkleTree:
        """The Merkle tree over the leaves (built once)."""
        if self._tree is None:
            self._tree = MerkleTree(_hash_leaves(self.leaves.items()))
        return self._tree

    @property
    def root_bytes(self) -> bytes:
        """The state root, 32 raw bytes."""
        return self.merkle.root

    @property
    def root(self) -> str:
        """The state root in hex, for display and JSON."""
        return self.merkle.root.hex()

    def index(self, name: str) -> int:
        """The leaf index of ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise StateSchemaError(f"no leaf named {name!r} in this state") from None

    def proof(self, name: str) -> Proof:
        """The inclusion proof of leaf ``name`` against :attr:`root`."""
        return self.merkle.proof(self.index(name))

    def snapshot(self) -> StateTree:
        """A copy whose tensors no longer share memory with live objects."""
        return StateTree({k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                          for k, v in self.leaves.items()})

    def subtree(self, prefix: str) -> dict[str, Leaf]:
        """The leaves under ``prefix`` (for example ``"model/"``), prefix stripped."""
        return {k[len(prefix):]: v for k, v in self.leaves.items() if k.startswith(prefix)}


def _hash_leaves(items: Iterable[tuple[str, Leaf]]) -> list[bytes]:
    items = list(items)
    total = sum(_leaf_nbytes(v) for _, v in items)
    if total < _PARALLEL_MIN_BYTES or len(items) < 2:
        return [leaf_hash(k, v) for k, v in items]
    with ThreadPoolExecutor(max_workers=max(1, min(4, torch.get_num_threads(), len(items)))) as ex:
        return list(ex.map(lambda kv: leaf_hash(*kv), items))


def state_root(tree: StateTree) -> str:
    """The hex Merkle root of ``tree``."""
    return tree.root


# --------------------------------------------------------------------------- flatten


def flatten(prefix: str, obj: Any) -> Iterator[tuple[str, Leaf]]:
    """Leaves for ``obj`` under ``prefix``: a dict recurses with ``/key``; a tensor, or a
    plain value (lists of plain values included), is one leaf; any other list recurses
    with ``/index``."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from flatten(f"{prefix}/{k}", v)
    elif isinstance(obj, torch.Tensor) or is_plain(obj):
        yield prefix, obj.detach() if isinstance(obj, torch.Tensor) else _listify(obj)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from flatten(f"{prefix}/{i}", v)
    else:
        raise StateSchemaError(
            f"{prefix!r} holds a {type(obj).__name__} ({obj!r:.60}); state leaves are tensors "
            "and plain values. Keep such objects out of state_dict(), or convert them"
        )


def _listify(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_listify(x) for x in v]
    if isinstance(v, dict):
        return {k: _listify(x) for k, x in v.items()}
    return v


def unflatten(prefix: str, template: Any, leaves: Mapping[str, Leaf]) -> Any:
    """Rebuild the value at ``prefix`` with ``template``'s structure (inverse of :func:`flatten`)."""
    if prefix in leaves:
        return _like(template, leaves[prefix])
    if isinstance(template, Mapping):
        return {k: unflatten(f"{prefix}/{k}", v, leaves) for k, v in template.items()}
    if isinstance(template, list | tuple):
        out = [unflatten(f"{prefix}/{i}", v, leaves) for i, v in enumerate(template)]
        return tuple(out) if isinstance(template, tuple) else out
    raise CheckpointError(
        f"the checkpoint has no leaf {prefix!r}, which the live object needs; "
        "it was written for another model, optimizer or scheduler"
    )


def _like(template: Any, value: Any) -> Any:
    if isinstance(template, tuple) and isinstance(value, list):
        return tuple(_like(t, v) for t, v in zip(template, value, strict=False))
    return value


# --------------------------------------------------------------------------- capture


def unique_state_dict(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's state_dict with tied tensors kept once, under the first name,
    and the alias map ``{later name: first name}``."""
    seen: dict[tuple[Any, ...], str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in model.state_dict(keep_vars=False).items():
        if not isinstance(t, torch.Tensor):
            raise StateSchemaError(f"model state {name!r} is a {type(t).__name__}, not a tensor")
        key = _identity(t)
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        unique[name] = t.detach()
    return unique, aliases


def _identity(t: torch.Tensor) -> tuple[Any, ...] | None:
    if t.numel() == 0:
        return None
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
            t.stride(), t.dtype, t.device)


def _optimizer_leaves(optimizer: torch.optim.Optimizer) -> Iterator[tuple[str, Leaf]]:
    sd = optimizer.state_dict()
    for idx, pstate in sd["state"].items():
        for key, v in pstate.items():
            yield from flatten(f"optim/state/{idx}/{key}", v)
    for i, group in enumerate(sd["param_groups"]):
        for hp, v in group.items():
            if hp != "params":
                yield from flatten(f"optim/groups/{i}/{hp}", v)


def rng_leaves(mode: str, ree_rng: Any = None) -> dict[str, Leaf]:
    """The RNG leaves: the host generators in device mode, the REE generator in strict mode."""
    if mode == "strict":
        if ree_rng is None:
            raise ReeConfigError("strict mode needs the REE generator's state (ree_rng=...)")
        return {"rng/ree": _listify(ree_rng)}
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "rng/torch_cpu": torch.get_rng_state(),
        "rng/python": [version, list(internal), gauss],
        "rng/numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }


def capture_state(
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    *,
    step: int,
    data: Mapping[str, int] | None = None,
    world_size: int = 1,
    mode: str = "device",
    rng: bool = True,
    ree_rng: Any = None,
) -> StateTree:
    """Build the state tree of the normative schema.

    ``step`` is the REE's own optimizer-step counter; ``data`` the cursor
    ``{"epoch", "index", "seed"}`` (a sampler's ``state_dict()`` fits). In device
    mode the RNG leaves are the host generators; strict mode takes the REE
    generator state ``ree_rng`` and never a device generator.
    """
    if mode not in MODES:
        raise ReeConfigError(f"REE mode {mode!r} is not one of {MODES}")
    leaves: dict[str, Leaf] = {}

    def add(name: str, v: Leaf) -> None:
        if name in leaves:
            raise StateSchemaError(f"two values map to the leaf name {name!r}")
        leaves[name] = v

    if model is not None:
        for name, t in unique_state_dict(model)[0].items():
            add(f"model/{name}", t)
    if optimizer is not None:
        for name, v in _optimizer_leaves(optimizer):
            add(name, v)
    if scheduler is not None:
        for name, v in flatten("sched", scheduler.state_dict()):
            add(name, v)
    if scaler is not None and getattr(scaler, "is_enabled", lambda: True)():
        for name, v in flatten("scaler", scaler.state_dict()):
            add(name, v)
    if rng:
        for name, v in rng_leaves(mode, ree_rng).items():
            add(name, v)
    add("ree/step", int(step))
    cursor = dict(data or {})
    for key in ("epoch", "index", "seed"):
        add(f"data/{key}", int(cursor.get(key, 0)))
    add("meta/world_size", int(world_size))
    return StateTree(leaves)


# --------------------------------------------------------------------------- restore


def restore_state(
    tree: StateTree,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    *,
    rng: bool = True,
) -> dict[str, int]:
    """Load ``tree`` into live objects; return ``{"step", "epoch", "index", "seed", "world_size"}``."""
    leaves = tree.leaves
    if model is not None:
        _restore_model(tree, model)
    if optimizer is not None:
        _restore_optimizer(tree, optimizer)
    if scheduler is not None:
        scheduler.load_state_dict(unflatten("sched", scheduler.state_dict(), leaves))
    if scaler is not None and getattr(scaler, "is_enabled", lambda: True)():
        scaler.load_state_dict(unflatten("scaler", scaler.state_dict(), leaves))
    if rng:
        restore_rng(tree)
    out = {"step": int(leaves["ree/step"]), "world_size": int(leaves["meta/world_size"])}
    for key in ("epoch", "index", "seed"):
        out[key] = int(leaves[f"data/{key}"])
    return out


def _restore_model(tree: StateTree, model: torch.nn.Module) -> None:
    saved = tree.subtree("model/")
    unique, aliases = unique_state_dict(model)
    missing = sorted(set(unique) - set(saved))
    extra = sorted(set(saved) - set(unique))
    if missing or extra:
        raise CheckpointError(
            f"the checkpoint does not fit this model: missing {missing[:5]}, unexpected "
            f"{extra[:5]}; load it into the same architecture that wrote it"
        )
    sd = dict(saved)
    sd.update({alias: saved[first] for alias, first in aliases.items()})
    model.load_state_dict(sd, strict=True)


def _restore_optimizer(tree: StateTree, optimizer: torch.optim.Optimizer) -> None:
    live = optimizer.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for name, v in tree.subtree("optim/state/").items():
        idx, _, key = name.partition("/")
        state.setdefault(int(idx), {})[key] = v
    groups = []
    for i, group in enumerate(live["param_groups"]):
        hps = {k: unflatten(f"optim/groups/{i}/{k}", v, tree.leaves)
               for k, v in group.items() if k != "params"}
        groups.append({**hps, "params": group["params"]})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def restore_rng(tree: StateTree) -> None:
    """Set the host generators from a device-mode tree's RNG leaves."""
    leaves = tree.leaves
    if "rng/torch_cpu" in leaves:
        torch.set_rng_state(leaves["rng/torch_cpu"].clone())
    if "rng/python" in leaves:
        version, internal, gauss = leaves["rng/python"]
        random.setstate((version, tuple(internal), gauss))
    if "rng/numpy" in leaves:
        name, keys, pos, has_gauss, cached = leaves["rng/numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------- skeletons


def skeleton(prefix: str, obj: Any) -> Any:
    """The JSON shape of ``obj`` as :func:`flatten` splits it, leaves replaced by their names.

    ``{"leaf": name}`` for a leaf, ``{"dict": {...}}``, ``{"list": [...]}`` or
    ``{"tuple": [...]}`` for containers. :func:`fill` rebuilds the value from a
    skeleton and the leaves, with no live object to copy the structure from.
    """
    if isinstance(obj, Mapping):
        return {"dict": {str(k): skeleton(f"{prefix}/{k}", v) for k, v in obj.items()}}
    if isinstance(obj, torch.Tensor) or is_plain(obj):
        return {"leaf": prefix, **({"tuple": True} if isinstance(obj, tuple) else {})}
    if isinstance(obj, list | tuple):
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return {kind: [skeleton(f"{prefix}/{i}", v) for i, v in enumerate(obj)]}
    raise StateSchemaError(f"{prefix!r} holds a {type(obj).__name__}, which no state leaf can hold")


def fill(skel: Any, leaves: Mapping[str, Leaf]) -> Any:
    """Rebuild a value from its :func:`skeleton` and the leaves (inverse of both)."""
    if not isinstance(skel, dict) or len(skel) not in (1, 2):
        raise CheckpointError(f"malformed skeleton {skel!r:.80} in checkpoint metadata")
    if "leaf" in skel:
        name = skel["leaf"]
        if name not in leaves:
            raise CheckpointError(f"the checkpoint has no leaf {name!r}, which its metadata names")
        v = leaves[name]
        return tuple(v) if skel.get("tuple") and isinstance(v, list) else v
    if "dict" in skel:
        return {k: fill(v, leaves) for k, v in skel["dict"].items()}
    if "list" in skel:
        return [fill(v, leaves) for v in skel["list"]]
    if "tuple" in skel:
        return tuple(fill(v, leaves) for v in skel["tuple"])
    raise CheckpointError(f"malformed skeleton {skel!r:.80} in checkpoint metadata")
