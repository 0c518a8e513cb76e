"""The client-side task API: submit, wait, fetch the verified result, read the receipt.

This is what the framework integrations call in the client role (DESIGN.md,
"Data flow", steps 2 and 7)::

    client = TaskClient(protocol, account, store, executor, workdir=...)
    task_id = client.submit(spec, {"recipe.py": source, "data.bin": shard})
    receipt = client.wait(task_id, timeout=600)
    path = client.fetch_result(task_id, dest)   # checked against the committed root

``wait`` also does the client's chores: it finalizes slots whose challenge
window passed, reopens a slot whose solver missed its deadline (the bond is
slashed and another solver resumes from the REE checkpoint), and ends slots
nobody claimed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from coordinator.chain import ChainError, Outcome, Protocol, SlotState, Stage, TaskParams
from coordinator.tasks._bundle import (
    INITIAL_CHECKPOINT,
    BlobStore,
    TaskBundle,
    build_bundle,
    load_bundle,
)
from coordinator.tasks._errors import ResultVerificationError, TaskError, TaskTimeoutError
from coordinator.tasks._results import fetch_checkpoint
from coordinator.tasks._run import Executor, RunRequest
from coordinator.tasks._spec import TaskSpec

SETTLED = (SlotState.PAID, SlotState.SLASHED, SlotState.EXPIRED)


@dataclass(frozen=True)
class SlotReceipt:
    """One replica's outcome."""

    slot: int
    solver: str
    state: str
    failed: bool
    steps: int
    trace_root: str
    final_root: str
    manifest_cid: str
    result_cid: str


@dataclass
class Receipt:
    """What the client got for its money: ids, CIDs, roots, cost, fee burned, verification outcome."""

    task_id: int
    spec_cid: str
    budget: int
    slots: list[SlotReceipt]
    outcome: str
    paid: int = 0
    fee_burned: int = 0
    refunded: int = 0
    transactions: list[str] = field(default_factory=list)
    disputes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_root(self) -> str:
        """The verified final state root ('' if no slot was paid a result)."""
        ok = [s for s in self.slots if s.state == "PAID" and not s.failed]
        return ok[0].final_root if ok else ""


class TaskClient:
    """The client role over one deployment, one account and one store."""

    def __init__(self, protocol: Protocol, account: LocalAccount, store: BlobStore,
                 executor: Executor, *, workdir: Path, reopen: bool = True) -> None:  # fmt: skip
        self.p, self.account, self.store, self.executor = protocol, account, store, executor
        self.workdir = Path(workdir)
        self.reopen = reopen
        self.transactions: dict[int, list[str]] = {}

    # ------------------------------------------------------------------ posting

    def prepare(self, spec: TaskSpec, files: Mapping[str, bytes]) -> TaskBundle:
        """Build the initial REE checkpoint with the executor, then the bundle (deterministic CID)."""
        with tempfile.TemporaryDirectory(prefix="gensyn-prepare-", dir=self._tmp()) as tmp:
            bdir = Path(tmp) / "bundle"
            bdir.mkdir()
            for name, data in files.items():  # a name may hold folders: a shipped package's layout
                (bdir / name).parent.mkdir(parents=True, exist_ok=True)
                (bdir / name).write_bytes(data)
            res = self.executor.run(RunRequest(spec, bdir, Path(tmp) / "out", end_step=0))
            initial = res.checkpoints[0].read_bytes()
        from coordinator.storage import compute_cid

        spec = spec.with_initial(compute_cid(initial), res.final_root)
        return build_bundle(spec, {**files, INITIAL_CHECKPOINT: initial}, self.store)

    def post(self, bundle: TaskBundle) -> int:
        """Escrow the budget and post the task; returns its id."""
        s = bundle.spec
        params = TaskParams(
            spec_cid=bundle.cid, budget=s.budget, initial_root=bytes.fromhex(s.initial_root),
            commit_interval=s.commit_interval, total_steps=s.steps, bond=s.bond,
            claim_window=s.claim_window, work_window=s.work_window, reveal_window=s.reveal_window,
            challenge_window=s.challenge_window, replicas=s.replicas, spot_checks=s.spot_checks,
            verifier_fee=s.verifier_fee,
        )  # fmt: skip
        r = self.p.post_task(self.account, params)
        assert r.value is not None
        self.transactions.setdefault(r.value, []).append(r.tx_hash)
        return r.value

    def submit(self, spec: TaskSpec, files: Mapping[str, bytes]) -> int:
        """:meth:`prepare` then :meth:`post`."""
        return self.post(self.prepare(spec, files))

    def cancel(self, task_id: int) -> None:
        """Cancel a task nobody has claimed; the escrow becomes withdrawable credit."""
        self._record(task_id, self.p.cancel_task(self.account, task_id).tx_hash)

    # ------------------------------------------------------------------ progress

    def step(self, task_id: int) -> bool:
        """Do the client's chores once; True when every slot of the task is settled."""
        t = self.p.get_task(task_id)
        now = self.p.client.now()
        done = True
        for i in range(t["p"]["replicas"]):
            s = self.p.get_slot(task_id, i)
            st = SlotState(s["state"])
            if st in SETTLED:
                continue
            done = False
            self._chore(task_id, i, st, s, t, now)
        return done

    def _chore(
        self, tid: int, i: int, st: SlotState, s: dict[str, Any], t: dict[str, Any], now: int
    ) -> None:
        p = t["p"]
        try:
            if st == SlotState.REVEALED and now > s["revealedAt"] + p["challengeWindow"]:
                self._record(tid, self.p.finalize(self.account, tid, i).tx_hash)
            elif st == SlotState.CLAIMED and self.reopen:
                self._record(tid, self.p.reopen_slot(self.account, tid, i).tx_hash)
            elif st in (SlotState.OPEN, SlotState.CLAIMED, SlotState.COMMITTED):
                self._record(tid, self.p.timeout_slot(self.account, tid, i).tx_hash)
            elif st == SlotState.DISPUTED:
                d = self.p.get_dispute(s["dispute"])
                if Stage(d["stage"]) != Stage.RESOLVED and now > d["deadline"]:
                    self._record(tid, self.p.dispute_timeout(self.account, s["dispute"]).tx_hash)
        except ChainError as e:
            if e.error == "TooManyReopens":
                self.reopen = False
            elif e.error not in ("TooEarly", "WrongState") and SlotState(self.p.get_slot(tid, i)["state"]) == st:
                raise
            # else another party (the solver finalizing its own slot) moved the slot first: a race we lost

    def wait(self, task_id: int, *, timeout: float = 3600.0, poll: float = 1.0,
             on_poll: Callable[[], None] | None = None) -> Receipt:  # fmt: skip
        """Do the chores until every slot is settled; return the receipt.

        ``on_poll`` runs between polls (tests move chain time there).
        """
        end = time.monotonic() + timeout
        while not self.step(task_id):
            if time.monotonic() > end:
                raise TaskTimeoutError(
                    f"task {task_id} is not settled after {timeout:.0f}s; `gensyn task show "
                    f"{task_id}` says which slot waits for what"
                )
            if on_poll is not None:
                on_poll()
            else:
                time.sleep(poll)
        return self.receipt(task_id)

    # ------------------------------------------------------------------ results

    def receipt(self, task_id: int) -> Receipt:
        """The task's receipt, read from the chain and its events."""
        t = self.p.get_task(task_id)
        slots = []
        for i in range(t["p"]["replicas"]):
            s = self.p.get_slot(task_id, i)
            slots.append(SlotReceipt(
                i, s["solver"], SlotState(s["state"]).name, bool(s["failed"]), int(s["steps"]),
                s["traceRoot"].hex(), s["finalRoot"].hex(), s["manifestCid"], s["resultCid"],
            ))  # fmt: skip
        events = task_events(self.p, task_id)
        paid = sum(e.args["pay"] for e in events if e.name == "Paid")
        fee = sum(e.args["feeBurned"] for e in events if e.name == "Paid")
        refunded = sum(e.args["amount"] for e in events if e.name == "Refunded")
        disputes = [
            {"id": e.args["disputeId"], "outcome": Outcome(e.args["outcome"]).name}
            for e in events if e.name == "DisputeSettled"
        ]  # fmt: skip
        states = {s.state for s in slots}
        if any(s.state == "PAID" and not s.failed for s in slots):
            outcome = "verified"
        elif any(s.state == "PAID" and s.failed for s in slots):
            outcome = "failed"
        elif states <= {"SLASHED", "EXPIRED"}:
            outcome = "refunded"
        else:
            outcome = "pending"
        return Receipt(
            task_id, t["p"]["specCid"], int(t["p"]["budget"]), slots, outcome, paid, fee, refunded,
            sorted({*self.transactions.get(task_id, []), *(e.tx_hash for e in events)}), disputes,
        )  # fmt: skip

    def fetch_result(self, task_id: int, dest: Path) -> Path:
        """Download the final REE checkpoint of a paid slot and check it against the committed root."""
        r = self.receipt(task_id)
        ok = [s for s in r.slots if s.state == "PAID" and not s.failed]
        if not ok:
            raise TaskError(f"task {task_id} has no verified result (outcome {r.outcome!r})")
        s = ok[0]
        try:
            return fetch_checkpoint(self.store, s.result_cid, s.final_root, Path(dest))
        except Exception as e:
            raise ResultVerificationError(
                f"the result {s.result_cid} of task {task_id} does not match the committed root "
                f"{s.final_root}: {e}"
            ) from e

    def failure_traceback(self, task_id: int) -> str:
        """The remote traceback of a task whose user code raised ('' if none failed)."""
        from coordinator.tasks._bundle import get_verified

        failed = [s for s in self.receipt(task_id).slots if s.failed and s.result_cid]
        if not failed:
            return ""
        return get_verified(self.store, failed[0].result_cid).decode("utf-8", errors="replace")

    def spec(self, task_id: int) -> TaskSpec:
        """The task's spec, fetched from its bundle manifest (CID-checked)."""
        return load_bundle(self.store, self.p.get_task(task_id)["p"]["specCid"]).spec

    def _record(self, task_id: int, tx: str) -> None:
        self.transactions.setdefault(task_id, []).append(tx)

    def _tmp(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir


def task_events(p: Protocol, task_id: int) -> list[Any]:
    """Every market event of ``task_id``, in chain order."""
    from coordinator.chain import EventPoller

    poller = EventPoller(p.client, [p.market], from_block=p.deployment.block)
    return [e for e in poller.poll() if e.args.get("taskId") == task_id]
