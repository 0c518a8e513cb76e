"""Adversaries as data: one class per attack, each a node that misbehaves in exactly one way."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from coordinator.chain import ChainError, Reveal, SlotState
from coordinator.nodes import Killed, Referee, RunRecord, Solver, Verifier
from coordinator.tasks import RunManifest, RunResult, TaskBundle, publish_run
from ree._trace import Trace


class LazySolver(Solver):
    """Commits random weights without training, and cannot answer a dispute."""

    def compute(self, tid: int, slot: int, b: TaskBundle, bdir: Path) -> RunResult:
        ci, steps = b.spec.commit_interval, b.spec.steps
        marks = [0, *range(ci, steps, ci), steps]
        roots = [bytes.fromhex(b.spec.initial_root)] + [os.urandom(32) for _ in marks[1:]]
        return RunResult(Trace(ci, marks, roots, final=True), {}, roots[-1].hex(), steps)

    def play_disputes(self) -> bool:
        return False


class PerturbingSolver(Solver):
    """Trains honestly except that it nudges the weights right after step ``k``."""

    def __init__(self, *a: Any, k: int, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.k = k

    def fault_for(self, task_id: int) -> dict[str, Any]:
        return {"perturb_step": self.k}


class UlpSolver(Solver):
    """A machine that miscomputes ONE op: op ``op`` of step ``k`` comes out one ulp up; its
    committed roots and its operator trace are consistent with that."""

    def __init__(self, *a: Any, k: int, op: int, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.k, self.op = k, op

    def fault_for(self, task_id: int) -> dict[str, Any]:
        return {"ulp_op": [self.k, self.op]}


class InconsistentTraceSolver(UlpSolver):
    """Computes like :class:`UlpSolver`, but its trace records op ``op``'s honest output, so
    the op after it reads an input its links do not explain."""

    def fault_for(self, task_id: int) -> dict[str, Any]:
        return {"inconsistent_op": [self.k, self.op]}


class UntraceableSolver(Solver):
    """An honest solver whose executor cannot trace a step (a tensor from outside the step,
    an Accelerate loop that accumulates by hand): in a dispute it posts its checkpoint."""

    def party_run(self, task_id: int) -> Any:
        pr = super().party_run(task_id)
        if pr is not None and not getattr(pr, "_untraceable", False):
            real = pr.op_trace

            def op_trace(step: int, steps: int, keep: tuple[int, ...] = ()) -> RunResult:
                run = real(step, steps, keep)
                return dataclasses.replace(run, op_trace=None, op_inputs={},
                                           op_trace_error="this executor cannot trace the step")  # fmt: skip

            pr.op_trace = op_trace  # type: ignore[method-assign]
            pr._untraceable = True  # type: ignore[attr-defined]
        return pr


class Copier(Solver):
    """Copies the other replica's commitment, then tries to reveal the other's result as its own."""

    def work(self, tid: int, slot: int, b: TaskBundle, bdir: Path) -> None:
        other = next(self.p.get_slot(tid, j) for j in range(b.spec.replicas) if j != slot)
        commitment = (
            other["commitment"] if other["state"] == SlotState.COMMITTED else os.urandom(32)
        )
        self.state.runs[f"{tid}:{slot}"] = RunRecord(
            tid, str(self.run_dir(tid, slot)), {}, slot, {}
        )
        self.save()
        fn = self.p.market.functions.commit(tid, slot, commitment)
        self.p.client.transact(self.account, fn, "copied commit")

    def advance(self, tid: int, i: int, s: dict[str, Any], t: dict[str, Any]) -> bool:
        if SlotState(s["state"]) != SlotState.COMMITTED:
            return False
        other = next(self.p.get_slot(tid, j) for j in range(t["p"]["replicas"]) if j != i)
        if SlotState(other["state"]) != SlotState.REVEALED or f"tried:{tid}" in self.state.done:
            return False
        self.state.done.append(f"tried:{tid}")
        r = Reveal(other["traceRoot"], other["steps"], other["finalRoot"], other["manifestCid"],
                   other["resultCid"], bytes(32), other["failed"])  # fmt: skip
        try:
            self.p.reveal(self.account, tid, i, r, [])
        except ChainError as e:
            self.log(f"copy refused: {e.error}")
        return True

    def challenge_others(self, *a: Any) -> bool:
        return False


class LyingChallenger(Verifier):
    """Challenges an honest result with a made-up trace (and plays the dispute to its lie)."""

    def check(self, tid: int, i: int, s: dict[str, Any], t: dict[str, Any]) -> bool:
        run = self.run_task(tid, int(s["steps"]), t)
        roots = [run.trace.roots_raw[0]] + [hashlib.sha256(b"lie" + bytes([j])).digest()
                                            for j in range(1, run.trace.n)]  # fmt: skip
        fake = RunResult(Trace(run.trace.commit_interval, list(run.trace.steps), roots, final=True),
                         run.checkpoints, roots[-1].hex(), run.steps_done)  # fmt: skip
        self.state.runs[f"{tid}:verify"] = RunRecord(tid, str(self.workdir / "lie"), fake.to_json())
        self.state.done.append(f"checked:{tid}:{i}")
        self.save()
        return self.challenge(tid, i, roots)


class CrashingSolver(Solver):
    """Dies after publishing its first segment of progress, as if its machine went away."""

    def after_segment(self, tid: int, slot: int, step: int) -> None:
        self.alive = False
        raise Killed(f"killed at step {step}")


class OfflineVerifier(Verifier):
    """Never comes online."""

    def tick(self) -> bool:
        return False


class BribedReferee(Referee):
    """Rules against what its own re-execution shows."""

    def verdict(self, defender_wins: bool) -> bool:
        return not defender_wins


class WithholdingSolver(Solver):
    """Trains honestly, but its manifest names only the final checkpoint, and it never serves a demand."""

    def work(self, tid: int, slot: int, b: TaskBundle, bdir: Path) -> None:
        run = self.compute(tid, slot, b, bdir)
        m = publish_run(self.store, b.cid, run, only_steps={run.steps_done})
        reveal = self.make_reveal(tid, slot, run, m.cid, m.checkpoints[run.steps_done][1])
        json = {"trace_root": reveal.trace_root.hex(), "steps": reveal.steps,
                "final_root": reveal.final_root.hex(), "manifest_cid": reveal.manifest_cid,
                "result_cid": reveal.result_cid, "salt": reveal.salt.hex(), "failed": reveal.failed}  # fmt: skip
        self.state.runs[f"{tid}:{slot}"] = RunRecord(tid, str(self.run_dir(tid, slot)),
                                                     run.to_json(), slot, json)  # fmt: skip
        self.save()
        self.p.commit(self.account, tid, slot, reveal)

    def serve_demand(self, tid: int, i: int, rec: RunRecord) -> bool:
        return False


class StoreBlindVerifier(Verifier):
    """An honest verifier that cannot reach the solver's checkpoints, so it demands them on chain."""

    def manifest(self, cid: str) -> RunManifest:
        return dataclasses.replace(super().manifest(cid), checkpoints={})


class LastBlockProtocol:
    """A solver's view of the protocol that sends each move in the block whose timestamp is its
    deadline (``late=1``: one block after it). Test chains only (py-evm's ``time_travel``).
    Deadlines are reckoned from the post, so a reopened slot (a new clock) is out of scope."""

    def __init__(self, p: Any, late: int = 0) -> None:
        self._p, self.late = p, late
        self.moves: list[tuple[str, int, int]] = []  # (move, deadline, timestamp of its block)
        self.refused: list[tuple[str, str]] = []  # (move, chain error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    def _at(self, what: str, deadline: int, send: Any) -> Any:
        target = deadline + self.late
        if self._p.client.now() < target:
            self._p.client.w3.provider.ethereum_tester.time_travel(target)
        try:
            r = send()
        except ChainError as e:
            self.refused.append((what, str(e.error)))
            raise
        ts = int(self._p.client.w3.eth.get_block(r.block_number)["timestamp"])
        self.moves.append((what, deadline, ts))
        return r

    def _task_deadline(self, tid: int, windows: int) -> int:
        t = self._p.get_task(tid)
        q = t["p"]
        return (
            int(t["postedAt"])
            + q["claimWindow"]
            + q["workWindow"]
            + (q["revealWindow"] if windows > 2 else 0)
        )

    def commit(self, solver: Any, tid: int, slot: int, reveal: Any) -> Any:
        return self._at("commit", self._task_deadline(tid, 2),
                        lambda: self._p.commit(solver, tid, slot, reveal))  # fmt: skip

    def reveal(self, solver: Any, tid: int, slot: int, reveal: Any, proof: Any) -> Any:
        return self._at("reveal", self._task_deadline(tid, 3),
                        lambda: self._p.reveal(solver, tid, slot, reveal, proof))  # fmt: skip

    def _dispute(self, what: str, did: int, send: Any) -> Any:
        return self._at(what, int(self._p.get_dispute(did)["deadline"]), send)

    def respond(self, party: Any, did: int, *a: Any) -> Any:
        return self._dispute("respond", did, lambda: self._p.respond(party, did, *a))

    def post_step_root(self, party: Any, did: int, *a: Any) -> Any:
        return self._dispute("step roots", did, lambda: self._p.post_step_root(party, did, *a))

    def post_op_trace(self, party: Any, did: int, *a: Any) -> Any:
        return self._dispute("op trace", did, lambda: self._p.post_op_trace(party, did, *a))


class LastBlockSolver(PerturbingSolver):
    """Moves in the last block before each of its deadlines (commit, reveal, every dispute
    move), or one block late with ``late=1``; with ``k=0`` it trains honestly."""

    def __init__(self, *a: Any, late: int = 0, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.p = LastBlockProtocol(self.p, late)  # type: ignore[assignment]

    def fault_for(self, task_id: int) -> dict[str, Any]:
        return super().fault_for(task_id) if self.k else {}
