"""Traces: interval roots every commit_interval steps, leaf 0 the initial state."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ree
from ree._errors import TraceError


def root(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def test_trace_records_boundaries_and_final() -> None:
    t = ree.Trace(commit_interval=4)
    t.start(root(0))
    for step in range(1, 11):
        if t.due(step):
            t.record(step, root(step))
    t.finish(10, root(10))
    assert t.steps == [0, 4, 8, 10]
    assert t.n == 4
    assert t.final
    tree = ree.MerkleTree([hashlib.sha256(root(s)).digest() for s in t.steps])
    assert t.root == tree.root.hex()
    for i in range(t.n):
        assert ree.verify_proof(bytes.fromhex(t.root), t.proof(i))


def test_finish_on_a_boundary_adds_nothing() -> None:
    t = ree.Trace(commit_interval=2)
    t.start(root(0))
    t.record(2, root(2))
    t.finish(2, root(2))
    assert t.steps == [0, 2]
    with pytest.raises(TraceError, match="finished"):
        t.record(4, root(4))


def test_errors() -> None:
    with pytest.raises(TraceError, match="commit_interval"):
        ree.Trace(commit_interval=0)
    t = ree.Trace(commit_interval=2)
    with pytest.raises(TraceError, match="start"):
        t.record(2, root(2))
    t.start(root(0))
    with pytest.raises(TraceError, match="not a multiple"):
        t.record(3, root(3))
    t.record(2, root(2))
    with pytest.raises(TraceError, match="does not follow"):
        t.record(2, root(2))
    with pytest.raises(TraceError, match="32 bytes"):
        t.record(4, b"x")
    with pytest.raises(TraceError, match="empty trace"):
        _ = ree.Trace().root


@given(st.integers(1, 5), st.integers(0, 23))
def test_serialization_round_trip_is_stable(ci: int, steps: int) -> None:
    t = ree.Trace(commit_interval=ci)
    t.start(root(0))
    for s in range(1, steps + 1):
        if t.due(s):
            t.record(s, root(s))
    if steps:
        t.finish(steps, root(steps))
    again = ree.Trace.from_json(t.dumps())
    assert again.dumps() == t.dumps()
    assert again.root == t.root
    assert again.steps == t.steps


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(TraceError):
        ree.Trace.from_json(b"{")
    with pytest.raises(TraceError):
        ree.Trace.from_json({"format": "other"})
    with pytest.raises(TraceError, match="equal length"):
        ree.Trace.from_json({"format": "ree-trace/1", "commit_interval": 1, "steps": [0], "roots": []})


def test_longer_trace_has_another_root() -> None:
    a = ree.Trace(commit_interval=1)
    a.start(root(0))
    a.record(1, root(1))
    b = ree.Trace.from_json(a.dumps())
    b.record(2, root(1))
    assert a.root != b.root
