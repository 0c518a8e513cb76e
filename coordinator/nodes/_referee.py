"""The referee: when drawn, re-executes the disputed step and rules.

DESIGN.md, "Roles" and "A dispute (Verde)": a staked verifier in the referee
pool, drawn at random after the op-trace stage, never the client or a party.
It takes the agreed pre-state from the parties' evidence (CID- and
root-checked), re-executes the step, and rules before its deadline.
"""

from __future__ import annotations

from coordinator.chain import ChainError, EventPoller, Stage
from coordinator.dispute import judge_step
from coordinator.nodes._base import Node


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
