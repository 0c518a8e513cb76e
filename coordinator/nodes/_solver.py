"""The solver: claims matching tasks, trains under the REE, commits and reveals, keeps checkpoints.

DESIGN.md, "Data flow", step 3. The work runs in segments of whole intervals;
after each one the solver publishes a progress manifest (its REE checkpoints
so far) and names it on chain, so that if it dies another solver resumes the
reopened slot from the last checkpoint. Under ``replicate``, a solver whose
roots disagree with another replica's challenges it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from coordinator.chain import ChainError, Reveal, SlotState
from coordinator.dispute import checkpoint_encodings, trace_tree
from coordinator.nodes._base import BENIGN, Node, RunRecord
from coordinator.tasks import (
    RunRequest,
    RunResult,
    TaskBundle,
    fetch_checkpoint,
    load_run,
    publish_run,
    put_checked,
)
from coordinator.tasks._results import write_metrics
from ree._trace import Trace

SEGMENTS = 4  # progress is published about this many times per task


class Killed(Exception):  # noqa: N818 - it is an event, not a failure of ours
    """Raised by a test's solver to stop as if the process died."""


def merge(prefix: RunResult | None, seg: RunResult) -> RunResult:
    """The run so far followed by the next segment (which starts at the prefix's last step)."""
    if prefix is None:
        return seg
    first = seg.trace.steps[0]
    keep = [
        (s, r) for s, r in zip(prefix.trace.steps, prefix.trace.roots_raw, strict=True) if s < first
    ]
    trace = Trace(
        commit_interval=seg.trace.commit_interval,
        steps=[s for s, _ in keep] + list(seg.trace.steps),
        roots_raw=[r for _, r in keep] + list(seg.trace.roots_raw),
        final=seg.trace.final,
    )
    return RunResult(
        trace, {**prefix.checkpoints, **seg.checkpoints}, seg.final_root, seg.steps_done,
        seg.failed, seg.error_type, seg.error_digest, seg.traceback, prefix.losses + seg.losses,
    )  # fmt: skip


class Solver(Node):
    """A staked machine that claims, trains, commits, reveals and collects."""

    role = "solver"
    max_failed_tasks = 3  # tasks in a row whose runs failed here before it stops claiming

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.failed_tasks = 0  # tasks in a row whose runs failed here (not kept over a restart)
        self._said_stopped = False

    def _tick(self) -> bool:
        did = False
        for tid in range(1, self.p.task_count() + 1):
            if f"task:{tid}" in self.state.done:
                continue
            t = self.p.get_task(tid)
            reps = t["p"]["replicas"]
            if t["settled"] >= reps:
                self.state.done.append(f"task:{tid}")
                continue
            slots = [self.p.get_slot(tid, i) for i in range(reps)]
            mine = [i for i, s in enumerate(slots) if s["solver"] == self.address]
            for i in mine:
                did = self.advance(tid, i, slots[i], t) or did
            if (
                not mine
                and f"runfailed:{tid}" not in self.state.done
                and any(SlotState(s["state"]) == SlotState.OPEN for s in slots)
                and self.claiming()
            ):
                did = self.try_claim(tid, t) or did
            if mine:
                did = self.challenge_others(tid, slots, mine[0], t) or did
        return did

    # ------------------------------------------------------------------ claim and work

    def try_claim(self, tid: int, t: dict[str, Any]) -> bool:
        """Claim a free slot of ``tid`` if this node takes the task, then do the work."""
        b, bdir = self.bundle(t["p"]["specCid"])
        if not self.accepts(b.spec):
            self.state.done.append(f"task:{tid}")
            return False
        try:
            slot = self.p.claim(self.account, tid).value
        except ChainError as e:
            if e.error in BENIGN:
                return False
            raise
        assert slot is not None
        self.log(f"claimed task {tid} slot {slot}")
        self.work_or_give_up(tid, slot, b, bdir)
        return True

    def work_or_give_up(self, tid: int, slot: int, b: TaskBundle, bdir: Path) -> None:
        """:meth:`work`; when it raises, this node never claims ``tid`` again.

        It retries while its claim lasts (the failure may pass), but once the claim
        expires the slot is left to another solver, which resumes from the
        published progress: a node whose executor keeps failing for a reason
        outside the task (a broken sandbox, a full disk) would otherwise reclaim
        the slot, lose a bond each time, and keep working solvers off the task.
        """
        try:
            self.work(tid, slot, b, bdir)
        except Exception:
            if f"runfailed:{tid}" not in self.state.done:
                self.state.done.append(f"runfailed:{tid}")
                self.failed_tasks += 1
                self.save()
                self.log(f"task {tid}: the run failed; this node will not claim the task again")
            raise
        self.failed_tasks = 0

    def claiming(self) -> bool:
        """False once the runs of ``max_failed_tasks`` tasks in a row have failed on this node.

        Something is wrong with the node itself then (each claim it lets expire
        costs a bond): it stops taking new tasks, still finishes what it holds,
        and says so once. A restart clears it.
        """
        if self.failed_tasks < self.max_failed_tasks:
            return True
        if not self._said_stopped:
            self._said_stopped = True
            self.log(
                f"stopped claiming new tasks: the runs of the last {self.failed_tasks} tasks "
                "failed on this node (see the errors above); fix the node and restart it"
            )
        return False

    def run_dir(self, tid: int, slot: int) -> Path:
        """Where this node keeps the run of (tid, slot)."""
        return self.workdir / "runs" / f"{tid}-{slot}"

    def resume_point(self, tid: int, slot: int, spec_cid: str) -> RunResult | None:
        """The run so far from the slot's progress manifest (ours or a dead solver's), checked."""
        cid = self.p.progress_cid(tid, slot)
        if not cid:
            return None
        m = load_run(self.store, cid)
        if m.spec_cid != spec_cid:
            return None
        d = self.run_dir(tid, slot) / "resumed"
        cks = {s: fetch_checkpoint(self.store, c, r, d / f"step-{s:08d}.safetensors")
               for s, (r, c) in m.checkpoints.items()}  # fmt: skip
        step, root, _ = m.latest()
        if m.trace.steps[-1] != step or m.trace.roots[-1] != root:
            return None  # the manifest's trace does not end at its last checkpoint: start afresh
        if m.metrics:  # the steps before the resume keep their metrics in the final manifest
            write_metrics(d, {s: v for s, v in m.metrics.items() if s <= step})
        self.log(f"task {tid} slot {slot}: resuming from step {step} ({cid})")
        return RunResult(m.trace, cks, root, step)

    def compute(self, tid: int, slot: int, b: TaskBundle, bdir: Path) -> RunResult:
        """Run the task in segments, publishing progress after each; returns the whole run."""
        spec = b.spec
        ci = spec.commit_interval
        seg = ci * max(1, -(-spec.steps // (ci * SEGMENTS)))
        run = self.resume_point(tid, slot, b.cid)
        while run is None or (run.steps_done < spec.steps and not run.failed):
            start = 0 if run is None else run.steps_done
            end = min(spec.steps, (start // seg + 1) * seg)
            req = RunRequest(
                spec, bdir, self.run_dir(tid, slot) / f"seg-{start}",
                start_checkpoint=None if run is None else run.checkpoints[start],
                start_step=start, end_step=end, fault=self.fault_for(tid),
            )  # fmt: skip
            run = merge(run, self.executor.run(req))
            if run.steps_done < spec.steps and not run.failed:
                m = publish_run(self.store, b.cid, run)
                self.p.report_progress(self.account, tid, slot, m.cid)
                self.after_segment(tid, slot, run.steps_done)
        return run

    def after_segment(self, tid: int, slot: int, step: int) -> None:
        """Called after each published segment (a test's solver dies here)."""

    def work(self, tid: int, slot: int, b: TaskBundle, bdir: Path) -> None:
        """Compute, publish, and commit; the reveal is saved before the commit is sent."""
        run = self.compute(tid, slot, b, bdir)
        m = publish_run(self.store, b.cid, run)
        if run.failed:  # the client reads the user's traceback from resultCid (DESIGN.md step 7)
            result_cid = put_checked(self.store, run.traceback.encode())
        else:
            result_cid = m.checkpoints.get(run.steps_done, ("", ""))[1]
        reveal = self.make_reveal(tid, slot, run, m.cid, result_cid)
        rec = RunRecord(
            tid, str(self.run_dir(tid, slot)), run.to_json(), slot, _reveal_json(reveal)
        )
        self.state.runs[f"{tid}:{slot}"] = rec
        self.save()
        self.p.commit(self.account, tid, slot, reveal)
        self.log(f"committed task {tid} slot {slot}: steps {run.steps_done} failed={run.failed}")

    def make_reveal(
        self, tid: int, slot: int, run: RunResult, manifest_cid: str, result_cid: str
    ) -> Reveal:
        """The reveal this solver commits to (adversaries override it)."""
        return Reveal(
            trace_root=run.trace.merkle().root, steps=run.steps_done,
            final_root=run.trace.roots_raw[-1], manifest_cid=manifest_cid, result_cid=result_cid,
            salt=os.urandom(32), failed=run.failed,
        )  # fmt: skip

    # ------------------------------------------------------------------ reveal and collect

    def advance(self, tid: int, i: int, s: dict[str, Any], t: dict[str, Any]) -> bool:
        """Move our slot on: finish work after a restart, reveal, finalize."""
        st = SlotState(s["state"])
        rec = self.state.runs.get(f"{tid}:{i}")
        if st == SlotState.CLAIMED and rec is None:
            b, bdir = self.bundle(t["p"]["specCid"])
            self.work_or_give_up(tid, i, b, bdir)
            return True
        if (
            st == SlotState.CLAIMED and rec is not None and rec.reveal
        ):  # the commit was lost: resend
            self.p.commit(self.account, tid, i, _reveal_from(rec.reveal))
            return True
        if st == SlotState.COMMITTED and rec is not None:
            r = _reveal_from(rec.reveal)
            roots = self.reveal_roots(rec)
            proof = list(trace_tree(roots).proof(len(roots) - 1).siblings)
            self.p.reveal(self.account, tid, i, r, proof)
            self.log(f"revealed task {tid} slot {i}")
            return True
        if st == SlotState.DEMANDED and rec is not None:
            return self.serve_demand(tid, i, rec)
        if (
            st == SlotState.REVEALED
            and self.p.client.now() > s["revealedAt"] + t["p"]["challengeWindow"]
        ):
            self.p.finalize(self.account, tid, i)
            self.log(f"finalized task {tid} slot {i}")
            self.withdraw_all()
            return True
        return False

    def serve_demand(self, tid: int, i: int, rec: RunRecord) -> bool:
        """Serve a demanded checkpoint on chain: its state leaves and the trace proof (availability)."""
        dm = self.p.get_demand(tid, i)
        key = f"served:{tid}:{i}:{dm['count']}"
        if key in self.state.done:
            return False
        run = rec.run_result()
        roots = self.reveal_roots(rec)
        index = int(dm["index"])
        step = min(index * run.trace.commit_interval, run.steps_done)
        path = run.checkpoints.get(step)
        if path is None:
            try:  # recompute it from the interval's start (levels 1-2 do the same)
                pr = self.party_run(tid)
                path = None if pr is None else pr.checkpoint_before(step + 1, run.steps_done)
            except Exception as e:  # noqa: BLE001 - nothing to serve from; the timeout decides
                self.log(f"task {tid} slot {i}: recomputing step {step} failed: {e}")
        if path is None:
            self.log(f"task {tid} slot {i}: cannot serve the checkpoint of leaf {index}")
            self.state.done.append(key)
            return False
        leaves = checkpoint_encodings(path, roots[index].hex())
        self.p.serve_checkpoint(self.account, tid, i, leaves,
                                trace_tree(roots).proof(index).siblings)  # fmt: skip
        self.state.done.append(key)
        self.save()
        self.log(
            f"task {tid} slot {i}: served the checkpoint of leaf {index} ({len(leaves)} leaves)"
        )
        return True

    def reveal_roots(self, rec: RunRecord) -> list[bytes]:
        """The trace leaves behind the committed trace root."""
        return list(rec.run_result().trace.roots_raw)

    def challenge_others(
        self, tid: int, slots: list[dict[str, Any]], mine: int, t: dict[str, Any]
    ) -> bool:
        """Under replicate, challenge a revealed replica whose final root differs from ours."""
        rec = self.state.runs.get(f"{tid}:{mine}")
        if rec is None or SlotState(slots[mine]["state"]) in (
            SlotState.CLAIMED,
            SlotState.COMMITTED,
        ):
            return False
        roots = self.reveal_roots(rec)
        did = False
        for j, s in enumerate(slots):
            key = f"challenged:{tid}:{j}"
            if j == mine or key in self.state.done or SlotState(s["state"]) != SlotState.REVEALED:
                continue
            if s["steps"] != rec.run_result().steps_done or s["finalRoot"] == roots[-1]:
                continue
            tree = trace_tree(roots)
            self.p.challenge(
                self.account, tid, j, tree.root, roots[-1], tree.proof(len(roots) - 1).siblings
            )
            self.state.done.append(key)
            self.save()
            self.log(f"challenged task {tid} slot {j}")
            did = True
        return did


def _reveal_json(r: Reveal) -> dict[str, Any]:
    return {"trace_root": r.trace_root.hex(), "steps": r.steps, "final_root": r.final_root.hex(),
            "manifest_cid": r.manifest_cid, "result_cid": r.result_cid, "salt": r.salt.hex(),
            "failed": r.failed}  # fmt: skip


def _reveal_from(d: dict[str, Any]) -> Reveal:
    return Reveal(bytes.fromhex(d["trace_root"]), int(d["steps"]), bytes.fromhex(d["final_root"]),
                  d["manifest_cid"], d["result_cid"], bytes.fromhex(d["salt"]), bool(d["failed"]))  # fmt: skip
