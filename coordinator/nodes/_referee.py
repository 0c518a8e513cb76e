"""The referee: when drawn, settles the disputed step at one operator, or by re-executing it.

DESIGN.md, "Roles" and "A dispute (Verde)": a staked verifier in the referee
pool, drawn at random after the op-trace stage, never the client or a party.
When the parties posted operator traces (CIDs of canonical JSON, roots on
chain) and a party named the disputed op's inputs, it checks both traces,
re-executes that ONE op (:func:`coordinator.dispute.judge_ops`) and rules with
``ruleOp``, naming the first bad op. Otherwise (the posted CIDs are REE
checkpoints, or one op cannot settle it) it takes the agreed pre-state from the
parties' evidence (CID- and root-checked), re-executes the step, and rules.
"""

from __future__ import annotations

from typing import Any

from coordinator.chain import ChainError, Stage
from coordinator.dispute import NO_OP, OpJudgement, OpLevelError, judge_ops, judge_step
from coordinator.nodes._base import Node
from coordinator.tasks import TaskSpec

INPUT_WAIT_TICKS = 3  # ticks of the wait for the parties' evidence that count as busy
INPUT_WAIT_MARGIN = 60  # seconds of the ruling window the referee never waits into


class Referee(Node):
    """A staked machine in the referee pool."""

    role = "referee"
    _waited: dict[str, int]
    _window: int | None

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._waited, self._window = {}, None

    def start(self) -> None:
        """Join the referee pool (once), then the usual start."""
        super().start()
        try:
            self.p.join_referee_pool(self.account)
            self.log("joined the referee pool")
        except ChainError as e:
            self.log(f"referee pool: {e.error}")

    def evidence(self, did: int, d: dict[str, Any]) -> list[str]:
        """The CIDs both parties posted for the disputed step: traces or checkpoints, then their
        pre-state checkpoints (the latest of each party)."""
        traces, inputs = self.op_evidence(did, d)
        latest = {role: cid for role, op, cid in inputs if op == NO_OP}
        return [cid for cid, _ in traces.values()] + list(latest.values())

    def judge_at_op(self, did: int, d: dict[str, Any], spec: TaskSpec) -> OpJudgement | None:
        """The op-level ruling, or None when one op cannot settle this dispute (then: the step)."""
        traces, inputs = self.op_evidence(did, d)
        if len(traces) != 2:
            return None
        named = {role: cid for role, op, cid in inputs if op != NO_OP}  # the latest of each party
        try:
            return judge_ops(store=self.store, traces=traces, state_root=d["agreed"].hex(),
                             input_cids=list(named.values()),
                             workdir=self.workdir / "disputes" / str(did),
                             mode=spec.ree_mode, task_fingerprint=spec.fingerprint, seed=spec.seed)  # fmt: skip
        except OpLevelError as e:
            self.log(f"dispute {did}: not at one op ({e}); re-executing the step")
        except Exception as e:  # noqa: BLE001 - whatever breaks at the op, the step still decides
            self.log(f"dispute {did}: the op-level check failed ({type(e).__name__}: {e}); "
                     "re-executing the step")  # fmt: skip
        return None

    def wait_for_inputs(self, did: int, d: dict[str, Any], key: str) -> bool | None:
        """Whether to hold the ruling for the parties' level-3 evidence: None to rule now, else
        the tick's "busy" flag. The parties post the divergent op's inputs, then their pre-state
        checkpoint (which says they are done); this referee waits for both parties' checkpoints
        for at most a quarter of its window (chain time), so that one op, not the whole step,
        settles the dispute when it can. The first few ticks count as busy (a harness that
        moves time when everyone idles gives the parties those rounds); later ones do not (a
        daemon sleeps its poll interval between them)."""
        _, inputs = self.op_evidence(did, d)
        if {role for role, op, _ in inputs if op == NO_OP} >= {"defender", "challenger"}:
            return None
        if self._window is None:
            self._window = int(self.p.client.call(self.p.game.functions.refereeTimeout()))
        drawn_at = int(d["deadline"]) - self._window
        now = self.p.client.now()
        if now >= drawn_at + self._window // 4 or now + INPUT_WAIT_MARGIN >= d["deadline"]:
            return None
        waited = self._waited.get(key, 0)
        self._waited[key] = waited + 1
        return waited < INPUT_WAIT_TICKS

    def verdict(self, defender_wins: bool) -> bool:
        """The verdict to post for a judgement (a test's bribed referee inverts it)."""
        return defender_wins

    def _tick(self) -> bool:
        did_any = False
        for did in range(1, int(self.p.client.call(self.p.game.functions.disputeCount())) + 1):
            d = self.p.get_dispute(did)
            key = f"ruled:{did}:{d['rounds']}:{d['referee']}"
            if (
                Stage(d["stage"]) != Stage.RULING
                or d["referee"] != self.address
                or key in self.state.done
            ):
                continue
            b, bdir = self.bundle(self.p.get_task(d["taskId"])["p"]["specCid"])
            if not self.accepts(b.spec):
                self.log(
                    f"dispute {did}: drawn, but this machine does not match the task's fingerprint"
                )
                self.state.done.append(key)
                continue
            wait = self.wait_for_inputs(did, d, key)
            if wait is not None:
                did_any = did_any or wait
                continue
            op = self.judge_at_op(did, d, b.spec)
            if op is not None:
                if op.op is None:  # a header that misses the agreed roots: no op to name
                    self.p.rule(self.account, did, self.verdict(op.defender_wins))
                else:
                    self.p.rule_op(self.account, did, self.verdict(op.defender_wins), op.op)
                self.state.done.append(key)
                self.save()
                self.log(f"dispute {did}: op {op.op} ({op.finding}, {op.ops_executed} op run of "
                         f"{op.records}) -> defender {'wins' if op.defender_wins else 'loses'}")  # fmt: skip
                did_any = True
                continue
            j = judge_step(
                executor=self.executor, store=self.store, spec=b.spec, bundle_dir=bdir,
                workdir=self.workdir / "disputes" / str(did), step=int(d["step"]),
                agreed=d["agreed"].hex(), claim_d=d["hiD"].hex(), claim_c=d["hiC"].hex(),
                evidence_cids=self.evidence(did, d),
            )  # fmt: skip
            self.p.rule(self.account, did, self.verdict(j.defender_wins))
            self.state.done.append(key)
            self.save()
            self.log(
                f"dispute {did}: step {j.step} -> defender {'wins' if j.defender_wins else 'loses'} ({j.evidence})"
            )
            did_any = True
        return did_any
