"""What every node shares: chain and store handles, persisted state, logs, bundles, dispute moves.

A node is driven by :meth:`Node.tick`, one pass over the chain that does
whatever is due. The daemons call it in a loop; tests call it directly on an
in-process chain. State that must survive a restart (reveals with their salts,
finished runs) is written to ``workdir/state.json`` before the chain sees it,
and a restarted node withdraws its pending credits first.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from coordinator.chain import ChainError, EventPoller, Protocol, Stage
from coordinator.dispute import NO_OP, PartyRun, fetch_op_trace, first_divergence, put_op_trace
from coordinator.tasks import (
    BlobStore,
    Executor,
    RunResult,
    TaskBundle,
    TaskSpec,
    load_bundle,
    put_checked,
    unpack_bundle,
)
from ree.optrace import OpTrace

# Chain errors that mean "not now" or "someone else did it": the next tick looks again.
BENIGN = frozenset({
    "TooEarly", "TooLate", "WrongState", "WrongStage", "AlreadyMoved", "RevealPhaseNotOpen",
    "NoFreeSlot", "AlreadyClaimed", "NothingToChallenge", "InsufficientFreeStake",
    "NothingToWithdraw", "AlreadyInPool", "SpotChecksExhausted",
})  # fmt: skip


@dataclass
class RunRecord:
    """A finished run of a task by this node, with what it committed."""

    task_id: int
    run_dir: str
    result: dict[str, Any]
    slot: int = -1
    reveal: dict[str, Any] = field(default_factory=dict)

    def run_result(self) -> RunResult:
        """The run's result (trace and checkpoint paths)."""
        return RunResult.from_json(self.result)


@dataclass
class NodeState:
    """The part of a node that survives a restart."""

    runs: dict[str, RunRecord] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)  # keys of work items finished for good
    failures: list[str] = field(default_factory=list)  # CIDs of uploaded tracebacks

    @classmethod
    def load(cls, path: Path) -> NodeState:
        """Read ``path`` (an empty state if it does not exist)."""
        if not path.exists():
            return cls()
        d = json.loads(path.read_text())
        return cls({k: RunRecord(**v) for k, v in d["runs"].items()}, d["done"], d["failures"])

    def save(self, path: Path) -> None:
        """Write atomically."""
        d = {
            "runs": {k: vars(v) for k, v in self.runs.items()},
            "done": self.done,
            "failures": self.failures,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(d, indent=1, sort_keys=True))
        os.replace(tmp, path)


class Node:
    """Base of the solver, verifier and referee: one account, one store, one executor."""

    role = "node"

    def __init__(self, protocol: Protocol, account: LocalAccount, store: BlobStore,
                 executor: Executor, workdir: Path, *, fingerprint: str | None = None,
                 frameworks: tuple[str, ...] = ("torch",)) -> None:  # fmt: skip
        self.p, self.account, self.store, self.executor = protocol, account, store, executor
        self.frameworks = frameworks  # what this node's executor plugins run
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.workdir / "state.json"
        self.state = NodeState.load(self.state_path)
        self.log_path = self.workdir / "node.log"
        self.fingerprint = fingerprint
        self.started = False
        self.alive = True
        self._bundles: dict[str, tuple[TaskBundle, Path]] = {}
        self._party: dict[int, PartyRun] = {}
        self._last_failure: tuple[object, ...] = ()  # where the last failure was raised
        self._repeats = 0  # how many times in a row it happened

    @property
    def address(self) -> str:
        """This node's account address."""
        return str(self.account.address)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Run once before the first tick: withdraw credits left from a previous life."""
        self.started = True
        self.log(f"{self.role} {self.address} starting")
        self.withdraw_all()

    def tick(self) -> bool:
        """Do whatever is due on chain; True if anything was sent. Failures are logged, not raised."""
        if not self.alive:
            return False
        if not self.started:
            self.start()
        try:
            did = self._tick()
            did = self.play_disputes() or did
            if did:  # it moved on: a later failure is news again
                self._last_failure = ()
            return did
        except ChainError as e:
            if e.error in BENIGN:
                return False
            self.fail(e)
        except Exception as e:
            self.fail(e)
        return False

    def _tick(self) -> bool:
        return False

    def save(self) -> None:
        """Persist the node state."""
        self.state.save(self.state_path)

    def log(self, msg: str) -> None:
        """Append a line to the node log."""
        with self.log_path.open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    def fail(self, e: BaseException) -> str:
        """Log a failure and upload its traceback; returns the traceback's CID.

        A failure raised where the previous one was (as by a run that fails for a
        reason outside the task, on every tick until its work window closes) is
        uploaded once: repeats only count, and the log says so on the 2nd, 4th,
        8th... time in a row instead of on every tick.
        """
        # where it was raised, not its message (which may name a fresh scratch folder)
        frames = traceback.extract_tb(e.__traceback__)
        where = (type(e).__qualname__, *((f.filename, f.lineno) for f in frames))
        if where == self._last_failure:
            self._repeats += 1
            if self._repeats & (self._repeats - 1) == 0:
                self.log(
                    f"error {type(e).__name__} again ({self._repeats} times in a row): {e} "
                    f"(first traceback {self.state.failures[-1]})"
                )
            return self.state.failures[-1]
        tb = "".join(traceback.format_exception(e))
        cid = put_checked(self.store, tb.encode())
        self._last_failure, self._repeats = where, 1
        self.state.failures.append(cid)
        self.save()
        self.log(f"error {type(e).__name__}: {e} (traceback {cid})")
        return cid

    def upload_logs(self) -> str:
        """Store the node log; returns its CID."""
        return put_checked(
            self.store, self.log_path.read_bytes() if self.log_path.exists() else b""
        )

    def withdraw_all(self) -> int:
        """Withdraw market and slash credits; returns the amount."""
        total = 0
        if (c := self.p.credit(self.address)) > 0:
            self.p.withdraw(self.account)
            total += c
        if (c := self.p.slash_credit(self.address)) > 0:
            self.p.withdraw_slash_credit(self.account)
            total += c
        if total:
            self.log(f"withdrew {total}")
        return total

    # ------------------------------------------------------------------ tasks

    def bundle(self, spec_cid: str) -> tuple[TaskBundle, Path]:
        """The task's bundle, fetched once and every CID checked."""
        if spec_cid not in self._bundles:
            b = load_bundle(self.store, spec_cid)
            d = self.workdir / "bundles" / spec_cid
            if not d.exists():  # extracted (every CID checked) by this node before a restart
                unpack_bundle(self.store, b, d)
            self._bundles[spec_cid] = (b, d)
        return self._bundles[spec_cid]

    def accepts(self, spec: TaskSpec) -> bool:
        """Policy and fingerprint: device mode needs this machine's fingerprint to match exactly."""
        if spec.framework not in self.frameworks:
            return False
        if spec.ree_mode == "device" and spec.fingerprint:
            if self.fingerprint is None:
                import ree

                self.fingerprint = str(ree.fingerprint()["hash"])
            return spec.fingerprint == self.fingerprint
        return True

    def fault_for(self, task_id: int) -> dict[str, Any]:
        """Adversary hook: the fault this node injects into its runs of ``task_id``."""
        return {}

    # ------------------------------------------------------------------ disputes

    def party_run(self, task_id: int) -> PartyRun | None:
        """This node's run of ``task_id``, ready to answer dispute moves."""
        if task_id in self._party:
            return self._party[task_id]
        rec = next((r for r in self.state.runs.values() if r.task_id == task_id and r.result), None)
        if rec is None:
            return None
        b, bdir = self.bundle(self.p.get_task(task_id)["p"]["specCid"])
        pr = PartyRun(b.spec, bdir, Path(rec.run_dir) / "dispute", rec.run_result(), self.executor,
                      self.fault_for(task_id))  # fmt: skip
        self._party[task_id] = pr
        return pr

    def play_disputes(self) -> bool:
        """Answer every dispute move that is this node's to make."""
        did = False
        for i in range(1, int(self.p.client.call(self.p.game.functions.disputeCount())) + 1):
            key = f"dispute:{i}"
            if key in self.state.done:
                continue
            d = self.p.get_dispute(i)
            if Stage(d["stage"]) == Stage.RESOLVED:
                self.state.done.append(key)
                continue
            if self.address not in (d["defender"], d["challenger"]):
                continue
            try:
                did = self.move(i, d) or did
            except ChainError as e:
                if e.error not in BENIGN:
                    raise
        return did

    def move(self, did: int, d: dict[str, Any]) -> bool:
        """Make this node's move in dispute ``did`` if one is due."""
        bit = 1 if self.address == d["defender"] else 2
        stage = Stage(d["stage"])
        if stage == Stage.APPEALABLE and not d["appealed"] and self.p.client.now() <= d["deadline"]:
            loser = d["challenger"] if d["firstVerdict"] else d["defender"]
            if loser == self.address:  # we know our claim is right: a second referee decides
                self.p.appeal(self.account, did)
                self.log(f"dispute {did}: appealed the first verdict")
                return True
        if stage in (Stage.RULING, Stage.AWAIT_REFEREE) and self.post_op_inputs(did, d):
            return True
        if stage in (Stage.RULING, Stage.APPEALABLE, Stage.AWAIT_REFEREE):
            if self.p.client.now() > d["deadline"]:
                self.p.dispute_timeout(self.account, did)
                return True
            return False
        if d["moved"] & bit:
            return False
        pr = self.party_run(d["taskId"])
        if pr is None:
            return False
        steps = d["steps"]
        if stage == Stage.BISECT:
            q = d["query"]
            leaf, proof = pr.level1(q) if d["level"] == 1 else pr.level2(d["interval"], steps, q)
            self.p.respond(self.account, did, leaf, proof)
        elif stage == Stage.STEP_ROOTS:
            root, sp, ep = pr.step_commitment(d["interval"], steps)
            self.p.post_step_root(self.account, did, root, sp, ep)
        elif stage == Stage.OP_TRACES:
            self.post_op_trace(did, d, pr, bit)
        else:
            return False
        self.log(f"dispute {did}: {stage.name} move (level {d['level']}, round {d['rounds']})")
        return True

    # ------------------------------------------------------------------ level 3 at the operator

    def op_evidence(
        self, did: int, d: dict[str, Any]
    ) -> tuple[dict[str, tuple[str, bytes]], list[tuple[str, int, str]]]:
        """Each party's posted (CID, root) for the disputed step, and the posted
        (party, op, CID)s of op inputs (``op == NO_OP``: that party's pre-state checkpoint)."""
        poller = EventPoller(self.p.client, [self.p.game], from_block=self.p.deployment.block)
        traces: dict[str, tuple[str, bytes]] = {}
        inputs: list[tuple[str, int, str]] = []
        for e in poller.poll():
            if e.args.get("disputeId") != did:
                continue
            role = "defender" if e.args.get("party") == d["defender"] else "challenger"
            if e.name == "OpTracePosted":
                traces[role] = (e.args["cid"], bytes(e.args["root"]))
            elif e.name == "OpInputsPosted":
                inputs.append((role, int(e.args["op"]), e.args["cid"]))
        return traces, inputs

    def post_op_trace(self, did: int, d: dict[str, Any], pr: PartyRun, bit: int) -> None:
        """Post this party's operator trace of the disputed step (its checkpoint if untraceable)."""
        steps, step = d["steps"], int(d["step"])
        try:
            run = pr.op_trace(step, steps)
            why = run.op_trace_error or "its executor records no operator traces"
        except Exception as e:  # noqa: BLE001 - a traced run that cannot finish: the step decides
            run, why = None, f"{type(e).__name__}: {e}"
        if run is None or run.op_trace is None:
            self.log(f"dispute {did}: no op trace of step {step} ({why}); posting the checkpoint")
            ck = pr.checkpoint_before(step, steps)
            cid = put_checked(self.store, ck.read_bytes())
            self.p.post_op_trace(self.account, did, cid, d["hiD"] if bit == 1 else d["hiC"])
            return
        cid, root = put_op_trace(self.store, OpTrace.loads(run.op_trace.read_bytes()))
        self.p.post_op_trace(self.account, did, cid, root)
        self.log(f"dispute {did}: posted the op trace of step {step} ({cid})")
        self.post_op_inputs(did, self.p.get_dispute(did))  # the second trace opens the ruling

    def post_op_inputs(self, did: int, d: dict[str, Any]) -> bool:
        """Once both traces are up: post the inputs of the first op where they part, then the
        pre-state checkpoint (for a referee sent to the whole step), which also tells the
        referee this party is done. Each post is recorded once it is on chain, so a restart
        redoes only what is missing."""
        inputs_key, done_key = f"opinputs:{did}", f"opdone:{did}"
        if done_key in self.state.done or Stage(d["stage"]) not in (Stage.RULING, Stage.AWAIT_REFEREE):
            return False
        role = "defender" if self.address == d["defender"] else "challenger"
        other = "challenger" if role == "defender" else "defender"
        pr = self.party_run(d["taskId"])
        traces, _ = self.op_evidence(did, d)
        if pr is None or role not in traces:
            return False
        steps, step = d["steps"], int(d["step"])
        if inputs_key not in self.state.done:
            try:
                self._post_divergent_inputs(did, pr, step, steps, traces[role], traces.get(other))
            except ChainError:
                raise
            except Exception as e:  # noqa: BLE001 - no inputs from us: the referee uses the step
                self.log(f"dispute {did}: no op inputs posted ({type(e).__name__}: {e})")
            self.state.done.append(inputs_key)
            self.save()
        ck = pr.checkpoint_before(step, steps)
        self.p.post_op_inputs(self.account, did, NO_OP, put_checked(self.store, ck.read_bytes()))
        self.state.done.append(done_key)
        self.save()
        return True

    def _post_divergent_inputs(self, did: int, pr: PartyRun, step: int, steps: int,
                               mine_at: tuple[str, bytes],
                               theirs_at: tuple[str, bytes] | None) -> None:  # fmt: skip
        try:
            mine = fetch_op_trace(self.store, *mine_at)
        except Exception:  # noqa: BLE001 - we posted our checkpoint, not a trace: the step decides
            return
        if theirs_at is None:
            return
        theirs = fetch_op_trace(self.store, *theirs_at)
        div = first_divergence(mine, theirs)
        if div is None:
            return
        run = pr.op_trace(step, steps, keep=(div,))
        if div in run.op_inputs:
            cid = put_checked(self.store, run.op_inputs[div].read_bytes())
            self.p.post_op_inputs(self.account, did, div, cid)
            self.log(f"dispute {did}: the traces part at op {div}; posted its inputs ({cid})")
