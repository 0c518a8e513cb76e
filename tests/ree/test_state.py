"""The state schema: leaf names, encodings, tied tensors, capture and restore."""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ree
from ree._encoding import canonical_json, leaf_hash
from ree._errors import CheckpointError, StateSchemaError


def _setup(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()


def test_schema_leaf_names() -> None:
    model, opt, sched = _setup()
    _train(model, opt, sched, 1)
    tree = ree.capture_state(model, opt, sched, step=1, data={"epoch": 2, "index": 10, "seed": 7}, world_size=1)
    names = set(tree.names)
    assert {"model/0.weight", "model/1.running_mean", "model/1.num_batches_tracked"} <= names
    assert {"optim/state/0/exp_avg", "optim/state/0/step", "optim/groups/0/lr", "optim/groups/0/betas"} <= names
    assert {"sched/last_epoch", "sched/step_size", "sched/_last_lr"} <= names
    assert {"rng/torch_cpu", "rng/python", "rng/numpy", "ree/step", "meta/world_size"} <= names
    assert {"data/epoch", "data/index", "data/seed"} <= names
    assert not any(n.startswith("optim/groups/0/params") for n in names)
    assert tree.leaves["data/index"] == 10
    assert tree.leaves["ree/step"] == 1
    assert list(tree.names) == sorted(tree.names, key=lambda s: s.encode())


def test_strict_mode_has_ree_rng_only() -> None:
    model, opt, sched = _setup()
    tree = ree.capture_state(model, step=0, mode="strict", ree_rng={"seed": 1, "counter": 5})
    rngs = [n for n in tree.names if n.startswith("rng/")]
    assert rngs == ["rng/ree"]
    with pytest.raises(ree.ReeConfigError, match="REE generator"):
        ree.capture_state(model, step=0, mode="strict")
    with pytest.raises(ree.ReeConfigError, match="not one of"):
        ree.capture_state(model, step=0, mode="fast")


def test_tied_tensors_once_under_first_name() -> None:
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    tree = ree.capture_state(model, step=0, rng=False)
    assert "model/emb.weight" in tree.names
    assert "model/head.weight" not in tree.names
    ree.restore_state(tree, model, rng=False)  # the alias is filled back in


def test_tensor_leaf_encoding_by_hand() -> None:
    t = torch.tensor([[1.0, -2.0]], dtype=torch.float32)
    name = b"model/w"
    enc = (b"T" + struct.pack(">I", len(name)) + name + struct.pack(">I", 7) + b"float32"
           + struct.pack(">I", 2) + struct.pack(">QQ", 1, 2) + struct.pack("<ff", 1.0, -2.0))
    assert leaf_hash("model/w", t) == hashlib.sha256(enc).digest()
    # bf16 is taken as raw bytes; a transposed view hashes its contiguous layout
    b = torch.tensor([1.5, 2.0], dtype=torch.bfloat16)
    assert leaf_hash("x", b) != leaf_hash("x", b.float())
    m = torch.arange(6.0).reshape(2, 3)
    assert leaf_hash("x", m.t()) == leaf_hash("x", m.t().contiguous())


def test_value_leaf_encoding_by_hand() -> None:
    assert canonical_json({"b": 0.1, "a": [True, None, 3]}) == b'{"a":[true,null,3],"b":0.1}'
    assert leaf_hash("ree/step", 5) == hashlib.sha256(b"V" + struct.pack(">I", 8) + b"ree/step" + b"5").digest()
    with pytest.raises(StateSchemaError, match="non-finite"):
        canonical_json(float("nan"))
    with pytest.raises(StateSchemaError, match="set"):
        ree.StateTree({"x": {1, 2}})


@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=16), st.integers(0, 15))
def test_one_changed_element_changes_the_root(values: list[float], pos: int) -> None:
    t = torch.tensor(values, dtype=torch.float32)
    base = ree.StateTree({"model/w": t, "ree/step": 0})
    u = t.clone()
    i = pos % len(values)
    u.view(torch.int32)[i] ^= 1  # flip the lowest mantissa bit: a 1-ulp change
    assert ree.StateTree({"model/w": u, "ree/step": 0}).root != base.root


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.booleans() | st.none(), min_size=1, max_size=8))
def test_root_ignores_insertion_order(d: dict[str, object]) -> None:
    a = ree.StateTree(dict(d))
    b = ree.StateTree(dict(reversed(list(d.items()))))
    assert a.root == b.root
    name = next(iter(d))
    assert ree.verify_proof(a.merkle.root, a.proof(name))


def test_renamed_leaf_changes_root() -> None:
    t = torch.ones(3)
    assert ree.StateTree({"model/a": t}).root != ree.StateTree({"model/b": t}).root


def test_capture_restore_round_trip_continues_identically() -> None:
    model, opt, sched = _setup(0)
    _train(model, opt, sched, 3)
    random.random()
    np.random.rand()
    tree = ree.capture_state(model, opt, sched, step=3).snapshot()
    _train(model, opt, sched, 2)
    expect = ree.capture_state(model, opt, sched, step=5).root

    m2, o2, s2 = _setup(123)  # different init: everything must come from the tree
    _train(m2, o2, s2, 1)
    cursor = ree.restore_state(tree, m2, o2, s2)
    assert cursor["step"] == 3
    assert ree.capture_state(m2, o2, s2, step=3).root == tree.root
    _train(m2, o2, s2, 2)
    assert ree.capture_state(m2, o2, s2, step=5).root == expect


def test_restore_into_wrong_model_is_refused() -> None:
    model, opt, sched = _setup()
    tree = ree.capture_state(model, step=0)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        ree.restore_state(tree, torch.nn.Linear(4, 2))


def test_non_tensor_state_is_named() -> None:
    class Odd(torch.optim.lr_scheduler.StepLR):
        def state_dict(self) -> dict[str, object]:
            return {**super().state_dict(), "fn": object()}

    model, opt, _ = _setup()
    with pytest.raises(StateSchemaError, match="sched/fn"):
        ree.capture_state(model, opt, Odd(opt, 2), step=0)
