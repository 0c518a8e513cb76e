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

from coordinator.chain import ChainError, EventPoller, Stage
from coordinator.dispute import OpJudgement, OpLevelError, judge_ops, judge_step
from coordinator.nodes._base import Node
from coordinator.tasks import TaskSpec

NO_OP = 2**64 - 1  # ruleOp's op when the ruling names no op (a trace was missing as a whole)


class Referee(Node):
    """A staked machine in the referee pool."""

    role = "referee"

    def start(self) -> None:
        """Join the referee pool (once), then the usual start."""
        super().start()
        try:
            self.p.join_referee_pool(self.account)
            self.log("joined the referee pool")
        except ChainError as e:
            self.log(f"referee pool: {e.error}")

    def evidence(self, did: int) -> list[str]:
        """The CIDs both parties posted for the disputed step."""
        poller = EventPoller(self.p.client, [self.p.game], from_block=self.p.deployment.block)
        return [e.args["cid"] for e in poller.poll()
                if e.name == "OpTracePosted" and e.args["disputeId"] == did]  # fmt: skip

    def op_evidence(
        self, did: int, d: dict[str, Any]
    ) -> tuple[dict[str, tuple[str, bytes]], list[str]]:
        """Each party's posted (CID, root) of its op trace, and the posted op-input CIDs."""
        poller = EventPoller(self.p.client, [self.p.game], from_block=self.p.deployment.block)
        traces: dict[str, tuple[str, bytes]] = {}
        inputs: list[str] = []
        for e in poller.poll():
            if e.args.get("disputeId") != did:
                continue
            role = "defender" if e.args.get("party") == d["defender"] else "challenger"
            if e.name == "OpTracePosted":
                traces[role] = (e.args["cid"], bytes(e.args["root"]))
            elif e.name == "OpInputsPosted":
                inputs.append(e.args["cid"])
        return traces, inputs

    def judge_at_op(self, did: int, d: dict[str, Any], spec: TaskSpec) -> OpJudgement | None:
        """The op-level ruling, or None when one op cannot settle this dispute (then: the step)."""
        traces, inputs = self.op_evidence(did, d)
        if len(traces) != 2:
            return None
        try:
            return judge_ops(store=self.store, traces=traces, state_root=d["agreed"].hex(),
                             input_cids=inputs, workdir=self.workdir / "disputes" / str(did),
                             mode=spec.ree_mode, task_fingerprint=spec.fingerprint, seed=spec.seed)  # fmt: skip
        except OpLevelError as e:
            self.log(f"dispute {did}: not at one op ({e}); re-executing the step")
            return None

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
            op = self.judge_at_op(did, d, b.spec)
            if op is not None:
                self.p.rule_op(self.account, did, self.verdict(op.defender_wins),
                               NO_OP if op.op is None else op.op)  # fmt: skip
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
                evidence_cids=self.evidence(did),
            )  # fmt: skip
            self.p.rule(self.account, did, self.verdict(j.defender_wins))
            self.state.done.append(key)
            self.save()
            self.log(
                f"dispute {did}: step {j.step} -> defender {'wins' if j.defender_wins else 'loses'} ({j.evidence})"
            )
            did_any = True
        return did_any
