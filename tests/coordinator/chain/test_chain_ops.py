"""Level 3 at the operator, on py-evm (issue #6): op traces under CIDs, roots on chain, one op run.

A wrong solver and an honest challenger play levels 1 and 2 on chain to the
disputed step; each stores its operator trace of that step (canonical JSON)
under a CID and posts the CID and Merkle root; the honest party names the CID
of the first divergent op's inputs; the drawn referee fetches and checks both
traces, re-executes that ONE op, and rules with ``ruleOp``, so the chain names
the first bad op. The honest side wins in every seeded trial, whichever role it
plays, and the rounds stay within the bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.chain import Outcome, Stage
from coordinator.dispute import (
    OpJudgement,
    OpLevelError,
    first_divergence,
    inputs_max_bytes,
    judge_ops,
    put_op_inputs,
    put_op_trace,
)
from coordinator.storage import LocalStore, ObjectTooLargeError
from coordinator.tasks import get_verified, put_checked
from ree.optrace import CHALLENGER, DEFENDER
from tests.coordinator.chain.chain_helpers import (
    STAKE,
    TraceModel,
    World,
    open_challenge,
    play_to_referee,
    referee_of,
    sha,
)
from tests.ree.optrace.adversaries import Attack, Fault, attacks, honest
from tests.ree.optrace.steps import trace_step

CI, STEPS, FAULT = 4, 32, 14  # the disputed step is 14: level 1 and level 2 both bisect


@dataclass(frozen=True)
class Real(TraceModel):
    """A trace model whose state before the disputed step is a real state root."""

    pre: bytes = b""

    def state(self, step: int) -> bytes:
        if step == FAULT - 1 and self.pre:
            return self.pre
        return super().state(step)


def _int(v: int | None) -> int:
    assert v is not None
    return v


def play(w: World, attack: Attack, store: LocalStore, tmp: Path) -> dict[str, Any]:
    """One seeded dispute through all three levels; returns the resolved dispute."""
    good_trace, cheat = honest(attack.seed).trace, attack.cheat()
    pre = bytes.fromhex(good_trace.state_root)
    bad_m, good_m = Real(fault=FAULT, pre=pre), Real(pre=pre)
    honest_is_defender = attack.seed % 2 == 0
    d_acct, c_acct = w.bob, w.dave
    d_model, c_model = (good_m, bad_m) if honest_is_defender else (bad_m, good_m)
    tid = _int(w.p.post_task(w.alice, w.task()).value)
    slot = _int(w.p.claim(d_acct, tid).value)
    r, proof = d_model.reveal(CI, STEPS)
    w.p.commit(d_acct, tid, slot, r)
    w.p.reveal(d_acct, tid, slot, r, proof)
    did = open_challenge(w, c_acct, tid, slot, c_model, CI, STEPS)
    # levels 1 and 2 (the op-trace stage is posted below, for real)
    for _ in range(100):
        d = w.p.get_dispute(did)
        if Stage(d["stage"]) == Stage.OP_TRACES:
            break
        play_to_referee_once(w, did, d_acct, c_acct, d_model, c_model)
    assert d["step"] == FAULT
    assert d["agreed"] == pre
    posted = {}
    for party, acct, trace in ((DEFENDER, d_acct, good_trace if honest_is_defender else cheat),
                               (CHALLENGER, c_acct, cheat if honest_is_defender else good_trace)):  # fmt: skip
        cid, root = put_op_trace(store, trace)
        w.p.post_op_trace(acct, did, cid, root)
        posted[party] = (cid, root)
    assert Stage(w.p.get_dispute(did)["stage"]) == Stage.RULING
    op = first_divergence(good_trace, cheat)
    assert op is not None
    kept = trace_step(attack.seed, keep=(op,))
    inputs = put_op_inputs(store, kept.trace.records[op], kept.kept[op], tmp)
    # the referee's cap on an inputs file never refuses the honest one
    assert len(store.get(inputs)) <= inputs_max_bytes(kept.trace.records[op])
    w.p.post_op_inputs(d_acct if honest_is_defender else c_acct, did, op, inputs)
    # the cheat posts a file too large for the op's inputs first: it is refused unread
    junk = put_checked(store, b"\0" * (inputs_max_bytes(kept.trace.records[op]) + 1))
    w.p.post_op_inputs(c_acct if honest_is_defender else d_acct, did, op, junk)
    j = judge_ops(store=store, traces=posted, state_root=pre.hex(), input_cids=[junk, inputs],
                  workdir=tmp / f"ref-{attack.seed}-{attack.target}")  # fmt: skip
    assert j.defender_wins == honest_is_defender, j
    ref = referee_of(w, did)
    if j.op is None:
        w.p.rule(ref, did, j.defender_wins)
    else:
        w.p.rule_op(ref, did, j.defender_wins, j.op)
    w.client.advance_time(601)
    w.p.dispute_timeout(w.gov, did)  # no appeal: the verdict is final
    out = w.p.get_dispute(did)
    out["judgement"] = j
    out["honest_is_defender"] = honest_is_defender
    return out


def play_to_referee_once(w: World, did: int, d_acct: object, c_acct: object, d_model: TraceModel,
                         c_model: TraceModel) -> None:  # fmt: skip
    """One round of levels 1-2 (the helper plays whole disputes; this stops at op traces)."""
    d = w.p.get_dispute(did)
    stage = Stage(d["stage"])
    for acct, model in ((d_acct, d_model), (c_acct, c_model)):
        if stage == Stage.BISECT:
            q = d["query"]
            if d["level"] == 1:
                tree, leaf = model.tree(CI, STEPS), model.leaf(q, CI, STEPS)
            else:
                tree = model.step_tree(d["interval"], CI, STEPS)
                leaf = model.step_leaves(d["interval"], CI, STEPS)[q]
            w.p.respond(acct, did, leaf, tree.proof(q).siblings)  # type: ignore[arg-type]
        elif stage == Stage.STEP_ROOTS:
            t = model.step_tree(d["interval"], CI, STEPS)
            w.p.post_step_root(acct, did, t.root, t.proof(0).siblings,  # type: ignore[arg-type]
                               t.proof(t.n - 1).siblings)  # fmt: skip


TRIALS = [*attacks(Fault.ULP, range(3)), *attacks(Fault.INCONSISTENT, range(3, 6))]


@pytest.mark.parametrize("attack", TRIALS, ids=lambda a: f"{a.fault.name}-s{a.seed}-op{a.target}")
def test_ruling_names_the_first_bad_op_on_chain(
    world: World, attack: Attack, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    d = play(world, attack, store, tmp_path)
    j: OpJudgement = d["judgement"]
    cheater = world.bob if not d["honest_is_defender"] else world.dave
    assert Outcome(d["outcome"]) == (
        Outcome.DEFENDER_WON if d["honest_is_defender"] else Outcome.CHALLENGER_WON
    )
    assert world.p.stake_of(cheater.address)["staked"] < STAKE  # the cheat is slashed
    honest_side = world.dave if not d["honest_is_defender"] else world.bob
    assert world.p.stake_of(honest_side.address)["staked"] >= STAKE  # never the honest one
    if attack.fault is Fault.ULP:
        assert d["badOp"] == attack.target + 1  # the chain names exactly the injected op
        assert j.ops_executed == 1
    else:  # the link check catches it before anything runs
        assert j.ops_executed == 0
        assert d["badOp"] >= 1
    bound = world.p.client.call(world.p.game.functions.roundBound(1 + STEPS // CI, CI))
    assert d["rounds"] <= bound
    world.check_conservation()


def test_one_trace_alone_settles_nothing_at_the_op(world: World, tmp_path: Path) -> None:
    """A missing or mismatching trace sends the referee to the whole step: a lone trace's ops
    are checked against nothing (and an honest party that cannot trace posts its checkpoint,
    which must not lose to any trace the other side makes up)."""
    store = LocalStore(tmp_path / "store")
    good = honest(0).trace
    cid, root = put_op_trace(store, good)
    ck = put_checked(store, b"safetensors checkpoint bytes, not a trace")
    for other in (("bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", sha(b"x")),
                  (ck, sha(b"claimed post-state root")), (cid, sha(b"other"))):  # fmt: skip
        for traces in ({DEFENDER: other, CHALLENGER: (cid, root)},
                       {DEFENDER: (cid, root), CHALLENGER: other}):  # fmt: skip
            with pytest.raises(OpLevelError, match="without both traces"):
                judge_ops(store=store, traces=traces, state_root=good.state_root, input_cids=[],
                          workdir=tmp_path)  # fmt: skip


def test_device_mode_referee_must_match_the_fingerprint(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    good = honest(1).trace
    cid, root = put_op_trace(store, good)
    with pytest.raises(OpLevelError, match="fingerprint"):
        judge_ops(store=store, traces={DEFENDER: (cid, root), CHALLENGER: (cid, root)},
                  state_root=good.state_root, input_cids=[], workdir=tmp_path,
                  mode="device", task_fingerprint="0" * 64)  # fmt: skip
    import ree

    mine = str(ree.fingerprint("device")["hash"])
    # a matching machine gets past the fingerprint; identical traces settle nothing at one op
    with pytest.raises(OpLevelError, match="identical.*re-execute the step"):
        judge_ops(store=store, traces={DEFENDER: (cid, root), CHALLENGER: (cid, root)},
                  state_root=good.state_root, input_cids=[], workdir=tmp_path,
                  mode="device", task_fingerprint=mine)  # fmt: skip


_ = play_to_referee  # the whole-dispute helper; this module stops at the op-trace stage


def test_a_capped_fetch_refuses_an_object_by_its_declared_size(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = bytes(range(256)) * 4096  # 1 MiB: several blocks under a UnixFS root
    cid = put_checked(store, data)
    assert get_verified(store, cid, max_bytes=len(data)) == data
    with pytest.raises(ObjectTooLargeError, match=f"declared {len(data)}"):
        get_verified(store, cid, max_bytes=len(data) - 1)
    small = put_checked(store, b"x" * 10)
    with pytest.raises(ObjectTooLargeError, match="over the 9 bytes"):
        get_verified(store, small, max_bytes=9)
