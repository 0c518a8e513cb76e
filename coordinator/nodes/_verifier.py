"""The verifier: re-executes revealed results and challenges a wrong one.

DESIGN.md, "Data flow", step 4. Under ``spot``, the verifier re-executes the
interval drawn for it (randomness fixed by the block after the reveal) from the solver's REE
checkpoint, and commits and reveals its verdict for the fee. Otherwise, or when
the spot check disagrees, it re-runs the task to the revealed step count and
compares trace roots; on a difference it challenges with its own trace and
plays the dispute.

A checkpoint it cannot fetch (not in the manifest, or not served by the store)
it demands on chain (TaskMarket's availability game): the solver must serve it
in calldata before the data window closes, or this verifier ends the slot with
``dataTimeout`` and the withholder is slashed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from coordinator.chain import ChainError, EventPoller, SlotState
from coordinator.dispute import checkpoint_from_encodings, trace_tree
from coordinator.nodes._base import Node, RunRecord
from coordinator.tasks import RunManifest, RunRequest, RunResult, fetch_checkpoint, load_run

PENDING = "pending"  # spot_check's answer while a demanded checkpoint is outstanding
WAIT = "wait"  # ... before the block that fixes the draw exists (nothing was sent)


class Verifier(Node):
    """A staked machine that checks other people's results."""

    role = "verifier"

    def _tick(self) -> bool:
        did = False
        now = self.p.client.now()
        for tid in range(1, self.p.task_count() + 1):
            if f"task:{tid}" in self.state.done:
                continue
            t = self.p.get_task(tid)
            reps = t["p"]["replicas"]
            if t["settled"] >= reps:
                self.state.done.append(f"task:{tid}")
                continue
            for i in range(reps):
                s = self.p.get_slot(tid, i)
                key = f"checked:{tid}:{i}"
                if key in self.state.done or s["solver"] == self.address:
                    continue
                if SlotState(s["state"]) == SlotState.DEMANDED:
                    did = self.chase_demand(tid, i, now) or did
                    continue
                if SlotState(s["state"]) != SlotState.REVEALED:
                    continue
                if now > s["revealedAt"] + t["p"]["challengeWindow"]:
                    continue
                did = self.check(tid, i, s, t) or did
        return did

    def run_task(self, tid: int, steps: int, t: dict[str, Any]) -> RunResult:
        """Re-execute ``tid`` from its initial state to ``steps``."""
        b, bdir = self.bundle(t["p"]["specCid"])
        out = self.workdir / "runs" / f"{tid}-verify"
        return self.executor.run(
            RunRequest(b.spec, bdir, out, end_step=steps, fault=self.fault_for(tid))
        )

    def check(self, tid: int, i: int, s: dict[str, Any], t: dict[str, Any]) -> bool:
        """Verify one revealed slot (a spot check under ``spot``); challenge it if our roots differ."""
        b, _ = self.bundle(t["p"]["specCid"])
        if not self.accepts(b.spec):
            self.state.done.append(f"checked:{tid}:{i}")
            return False
        if t["p"]["spotChecks"] > 0 and not s["failed"]:
            agrees = self.spot_check(tid, i, s, t)
            if agrees is PENDING:
                return True  # a checkpoint was demanded: look again once it is served
            if agrees is WAIT:
                return False
            if agrees is None or agrees:
                self.state.done.append(f"checked:{tid}:{i}")
                self.save()
                return agrees is not None
        return self.full_check(tid, i, s, t)

    def spot_check(self, tid: int, i: int, s: dict[str, Any], t: dict[str, Any]) -> Any:
        """Re-execute the interval drawn for us from the solver's checkpoint; commit and reveal the verdict.

        Returns whether the interval's end root matched (None if we could not
        take a check; :data:`PENDING` if we demanded the starting checkpoint).
        """
        b, bdir = self.bundle(t["p"]["specCid"])
        ci = b.spec.commit_interval
        try:
            index = self.p.spot_index(tid, i, self.address)
        except ChainError as e:
            if e.error == "SeedNotReady":  # the block after the reveal fixes the draw: next tick
                return WAIT
            raise
        m = self.manifest(s["manifestCid"])
        roots = list(m.trace.roots_raw)
        if trace_tree(roots).root != s["traceRoot"] or index >= len(roots):
            return None  # the published manifest is not the committed trace: check it all
        start = (index - 1) * ci
        agrees = False  # a checkpoint the solver does not serve counts against it
        work = self.workdir / "spot" / f"{tid}-{i}"
        ck = self.start_checkpoint(tid, i, m.checkpoints, index - 1, start, roots, work)
        if ck is None and start > 0 and self.demand(tid, i, index - 1):
            return PENDING
        # a manifest that leaves out interval checkpoints withholds them: demand the first one
        steps = int(s["steps"])
        missing = [k for k in range(1, len(roots)) if min(k * ci, steps) not in m.checkpoints]
        if missing and self.demand(tid, i, missing[0]):
            return PENDING
        if ck is not None or start == 0:
            end = min(index * ci, steps)
            req = RunRequest(b.spec, bdir, work, start_checkpoint=ck, start_step=start, end_step=end,
                             fault=self.fault_for(tid))  # fmt: skip
            agrees = self.executor.run(req).final_root == roots[index].hex()
        salt = os.urandom(32)
        try:
            self.p.spot_commit(self.account, tid, i, agrees, salt)
        except ChainError as e:
            if e.error in ("SpotChecksExhausted", "AlreadyCommitted", "NotStaked"):
                return None
            raise
        proof = list(trace_tree(roots).proof(index).siblings)
        self.p.spot_reveal(self.account, tid, i, agrees, salt, roots[index], proof)
        self.log(
            f"task {tid} slot {i}: spot check of interval {index}: {'agrees' if agrees else 'DIFFERS'}"
        )
        return agrees

    def manifest(self, cid: str) -> RunManifest:
        """The solver's committed run manifest (every CID checked)."""
        return load_run(self.store, cid)

    def start_checkpoint(self, tid: int, i: int, cks: dict[int, tuple[str, str]], leaf: int,
                         start: int, roots: list[bytes], work: Path) -> Path | None:  # fmt: skip
        """The REE checkpoint at trace leaf ``leaf`` (step ``start``): from the store, or as served
        on chain after a demand; None when neither has it (step 0 runs from the bundle)."""
        if start == 0:
            return None
        path = work / f"start-{leaf}.safetensors"
        if start in cks:
            root, cid = cks[start]
            try:
                return fetch_checkpoint(self.store, cid, root, path)
            except Exception as e:  # withheld or corrupt: a demand settles it
                self.log(f"task {tid} slot {i}: checkpoint at step {start} unavailable ({e})")
        poller = EventPoller(self.p.client, [self.p.market], from_block=self.p.deployment.block)
        for ev in poller.poll():
            where = (ev.args.get("taskId"), ev.args.get("slot"), ev.args.get("index"))
            if ev.name == "CheckpointServed" and where == (tid, i, leaf):
                leaves = self.p.served_leaves(ev.tx_hash)
                return checkpoint_from_encodings(leaves, path, roots[leaf].hex())
        return None

    def demand(self, tid: int, i: int, leaf: int) -> bool:
        """Demand the checkpoint at trace leaf ``leaf`` on chain (once); False if we cannot."""
        key = f"demanded:{tid}:{i}:{leaf}"
        if key in self.state.done:
            return False  # demanded and served, yet unreadable: fall back to a full check
        try:
            self.p.demand_checkpoint(self.account, tid, i, leaf)
        except ChainError as e:
            self.log(f"task {tid} slot {i}: cannot demand leaf {leaf}: {e.error}")
            return False
        self.state.done.append(key)
        self.save()
        self.log(f"task {tid} slot {i}: demanded the checkpoint of leaf {leaf}")
        return True

    def chase_demand(self, tid: int, i: int, now: int) -> bool:
        """Our demand on (tid, i) was not served in time: end the slot, slashing the withholder."""
        dm = self.p.get_demand(tid, i)
        if dm["by"] != self.address or now <= dm["deadline"]:
            return False
        self.p.data_timeout(self.account, tid, i)
        self.state.done.append(f"checked:{tid}:{i}")
        self.save()
        self.log(f"task {tid} slot {i}: checkpoint of leaf {dm['index']} withheld; solver slashed")
        return True

    def full_check(self, tid: int, i: int, s: dict[str, Any], t: dict[str, Any]) -> bool:
        """Re-execute the whole task and compare trace roots; challenge on a difference."""
        steps = int(s["steps"])
        run = self.run_task(tid, steps + 1 if s["failed"] else steps, t)
        if (
            s["failed"] and not run.failed
        ):  # the claimed failure did not happen: challenge at its step count
            run = self.run_task(tid, steps, t)
        self.state.runs[f"{tid}:verify"] = RunRecord(
            tid, str(self.workdir / "runs" / f"{tid}-verify"), run.to_json()
        )
        self.state.done.append(f"checked:{tid}:{i}")
        self.save()
        roots = list(run.trace.roots_raw)
        tree = trace_tree(roots)
        if tree.root == s["traceRoot"]:
            self.log(f"task {tid} slot {i}: verified")
            return False
        if roots[-1] == s["finalRoot"]:
            self.log(f"task {tid} slot {i}: same final root, different trace; nothing to challenge")
            return False
        return self.challenge(tid, i, roots)

    def challenge(self, tid: int, i: int, roots: list[bytes]) -> bool:
        """Open a dispute against slot ``i`` with our trace ``roots``."""
        tree = trace_tree(roots)
        self.p.challenge(
            self.account, tid, i, tree.root, roots[-1], tree.proof(len(roots) - 1).siblings
        )
        self.log(f"task {tid} slot {i}: roots differ, challenged")
        return True
