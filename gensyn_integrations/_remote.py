"""The client role's one road to the network, shared by Lightning, the HF Trainer and Accelerate.

Each integration turns its user's job into a ``TaskSpec`` and the files of a
bundle (source, initial weights, data), then calls :func:`run_remote`. It
posts the task (or re-attaches to ``task_id``), waits for it to settle, and
returns the final REE checkpoint, loaded and checked against the root
committed on chain. A task that fails raises :class:`RemoteTaskError` with the
remote traceback, and says where the client's money went.

Which network: the configured one when ``network.rpc_url`` is set (see
:mod:`gensyn_integrations._network`), else the embedded devnet, started for
the call, whose chain time is moved past the challenge window.

While it waits, :func:`run_remote` reads the slot's progress manifests (each
CID-checked) and at the end the final manifest, and hands each new step's
metrics to ``on_progress`` (DESIGN.md, step 7: "the progress bar advances with
remote steps and loss, and logged metrics reach the Trainer's loggers").

:func:`estimate` and :func:`dry_run` price a task and run its first step in a
clean subprocess, touching no chain.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ree import GensynError

FEE_BPS = 50
"""TaskMarket's protocol fee in basis points when deployed (``feeBps``, 0.5%, burned); governance may change it."""
BPS = 10_000

Progress = Callable[[int, Mapping[int, Mapping[str, float]]], None]
"""``on_progress(steps_done, {step: {name: value}})``: the metrics of steps not reported before."""


class RemoteTaskError(GensynError, RuntimeError):
    """A remote task ended without verified weights; the message carries the remote traceback."""

    def __init__(self, message: str, *, task_id: int, outcome: str, traceback: str = "") -> None:
        super().__init__(message)
        self.task_id, self.outcome, self.traceback = task_id, outcome, traceback


@dataclass
class RemoteReceipt:
    """What a remote task bought: ids, transactions, CIDs, the verified root, cost and solvers.

    Each integration's receipt (``strategy.receipt``, ``trainer.receipt``, the
    launch's JSON) is this plus what its framework adds.
    """

    task_id: int
    transactions: list[str]
    spec_cid: str
    manifest_cids: list[str]
    result_cids: list[str]
    final_root: str
    verified: bool
    outcome: str
    cost: int
    fee_burned: int
    solvers: list[str]
    steps: int = 0
    retried: list[int] = field(default_factory=list)  # ids of earlier tries that were refunded

    @staticmethod
    def fields_of(res: RemoteResult) -> dict[str, Any]:
        """The common fields, read from a verified :class:`RemoteResult`."""
        r = res.receipt
        return {
            "task_id": res.task_id, "transactions": list(res.transactions), "spec_cid": r.spec_cid,
            "manifest_cids": [s.manifest_cid for s in r.slots],
            "result_cids": [s.result_cid for s in r.slots], "final_root": r.final_root,
            "verified": True, "outcome": r.outcome, "cost": r.paid + r.fee_burned,
            "fee_burned": r.fee_burned, "solvers": [s.solver for s in r.slots], "steps": res.steps,
            "retried": list(res.retried),
        }  # fmt: skip


@dataclass
class RemoteResult:
    """What one remote task bought: the chain's receipt and the verified final checkpoint."""

    task_id: int
    receipt: Any  # coordinator.tasks.Receipt
    checkpoint: Any  # ree.Checkpoint, root-checked
    transactions: list[str] = field(default_factory=list)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    retried: list[int] = field(default_factory=list)  # ids of earlier tries that were refunded
    spec: Any = None  # the TaskSpec that ran (fetched from the bundle when re-attached)

    @property
    def steps(self) -> int:
        """Optimizer steps the checkpoint has taken."""
        return int(self.checkpoint.tree.leaves["ree/step"])

    def weights(self, prefix: str = "model/") -> dict[str, Any]:
        """The checkpoint's leaves under ``prefix``, keyed without it (a ``state_dict``)."""
        return dict(self.checkpoint.tree.subtree(prefix).items())


@contextlib.contextmanager
def _network(config: Any, network: Any, frameworks: tuple[str, ...], tmp: Path,
             task_id: int | None, who: str) -> Iterator[Any]:  # fmt: skip
    from gensyn_integrations._network import configured, embedded_network, open_network
    from gensyn_integrations.errors import ConfigError

    if network is not None:
        yield network
    elif configured(config):
        yield open_network(config)
    elif task_id is not None:
        raise ConfigError(
            f"{who}: task_id={task_id} re-attaches to a task on a configured network, and none is "
            "configured (the embedded devnet of the call that posted a task stops with that call). "
            "Set network.rpc_url (gensyn.yaml, or GENSYN_NETWORK__RPC_URL), network.deployment, "
            "and the keystore account (network.keystore, network.account; the password from "
            "$GENSYN_PASSWORD or $GENSYN_PASSWORD_FILE), e.g. for a `gensyn devnet`",
            key="network.rpc_url", source=who,
        )  # fmt: skip
    else:
        with embedded_network(tmp / "devnet", frameworks=frameworks) as net:
            yield net


class _Watch:
    """Follows a task's progress manifests and reports each step's metrics once."""

    def __init__(self, net: Any, on_progress: Progress | None) -> None:
        self.net, self.on_progress = net, on_progress
        self.seen: dict[tuple[int, int], str] = {}
        self.metrics: dict[int, dict[str, float]] = {}
        self.reported = 0

    def manifest(self, tid: int, slot: int, cid: str) -> None:
        """Read the run manifest ``cid`` of (tid, slot) if new, and report the steps it adds."""
        from coordinator.tasks._results import load_run

        if not cid or self.seen.get((tid, slot)) == cid:
            return
        self.seen[(tid, slot)] = cid
        m = load_run(self.net.store, cid)  # CID-checked
        for step, row in m.metrics.items():
            self.metrics.setdefault(step, {}).update(row)
        done = max(m.trace.steps[-1] if m.trace.steps else 0, max(m.metrics, default=0))
        new = {s: self.metrics[s] for s in sorted(self.metrics) if s > self.reported}
        if self.on_progress is not None and (new or done > self.reported):
            self.on_progress(max(done, self.reported), new)
        self.reported = max(self.reported, done, max(new, default=0))

    def poll(self, tid: int, replicas: int) -> None:
        """Look at every slot's latest progress manifest."""
        for i in range(replicas):
            self.manifest(tid, i, self.net.protocol.progress_cid(tid, i))


def _money(net: Any, client: Any, tids: list[int]) -> str:
    """Where the client's money is after tasks ``tids`` ended without a result."""
    from coordinator.accounts import format_amount

    refunded = sum(client.receipt(t).refunded for t in tids)
    credit = net.protocol.credit(net.account.address)
    where = (
        "; this was the embedded devnet, which stops with this call: its tokens were test tokens"
        if net.embedded else ""
    )  # fmt: skip
    return (
        f"Refunded {format_amount(refunded)} (task {', '.join(map(str, tids))}); "
        f"{net.account.address} holds {format_amount(credit)} of market credit: take it out with "
        f"`gensyn withdraw`{where}"
    )


def run_remote(
    spec: Any,
    files: Mapping[str, bytes],
    *,
    frameworks: tuple[str, ...],
    timeout: float = 600.0,
    who: str = "GensynStrategy(role='client')",
    on_poll: Callable[[Any, int], None] | None = None,
    config: Any = None,
    network: Any = None,
    task_id: int | None = None,
    retries: int = 0,
    on_progress: Progress | None = None,
    on_posted: Callable[[int], None] | None = None,
) -> RemoteResult:
    """Post ``spec`` with ``files``, wait, fetch and check the result.

    ``frameworks``: the ``TaskSpec.framework`` values the embedded devnet's solvers accept.
    ``on_poll(client, task_id)`` runs between polls.
    ``who`` names the caller in error messages.
    ``config``: a :class:`~gensyn_integrations.config.GensynConfig` (None: :func:`load_config`);
    with ``network.rpc_url`` set the task goes there, else to the embedded devnet.
    ``network``: an open :class:`~gensyn_integrations._network.Network` to use instead.
    ``task_id``: re-attach to that task (``spec`` and ``files`` are then not used).
    ``retries``: re-post a task whose every slot was slashed or expired, this many times.
    ``on_progress(steps_done, metrics)``: each new step's metrics, as the solver publishes them.
    ``on_posted(task_id)``: right after the task is on chain (to re-attach after a crash).
    """
    from gensyn_integrations.config import load_config

    if config is None and network is None:
        config = load_config()
    with (
        tempfile.TemporaryDirectory(prefix="gensyn-remote-") as tmp,
        _network(config, network, frameworks, Path(tmp), task_id, who) as net,
    ):
        return _run(net, spec, files, Path(tmp), timeout=timeout, who=who, on_poll=on_poll,
                    task_id=task_id, retries=retries, on_progress=on_progress, on_posted=on_posted)  # fmt: skip


def _run(net: Any, spec: Any, files: Mapping[str, bytes], tmp: Path, *, timeout: float, who: str,
         on_poll: Callable[[Any, int], None] | None, task_id: int | None, retries: int,
         on_progress: Progress | None, on_posted: Callable[[int], None] | None) -> RemoteResult:  # fmt: skip
    import ree
    from coordinator.chain import SlotState
    from coordinator.tasks import InProcessExecutor, TaskClient, TaskTimeoutError
    from gensyn_integrations._manager import get_plugin_manager

    client = TaskClient(net.protocol, net.account, net.store, InProcessExecutor(get_plugin_manager()),
                        workdir=tmp / "client")  # fmt: skip
    watch = _Watch(net, on_progress)
    bundle = None
    tried: list[int] = []
    for attempt in range(retries + 1):
        if task_id is not None and attempt == 0:
            tid = task_id
            spec = client.spec(tid)
        else:
            bundle = bundle or client.prepare(spec, files)
            tid = client.post(bundle)
            if on_posted is not None:
                on_posted(tid)
        tried.append(tid)
        replicas = spec.replicas

        def poll(tid: int = tid, replicas: int = replicas, window: int = spec.challenge_window) -> None:
            time.sleep(0.25)
            if on_poll is not None:
                on_poll(client, tid)
            watch.poll(tid, replicas)
            states = [SlotState(net.protocol.get_slot(tid, i)["state"]) for i in range(replicas)]
            if SlotState.REVEALED in states:  # the embedded chain need not wait out the window
                net.advance_time(window + 1)

        try:
            receipt = client.wait(tid, timeout=timeout, poll=0.25, on_poll=poll)
        except TaskTimeoutError as e:
            raise RemoteTaskError(_unsettled(net, tid, timeout, who), task_id=tid, outcome="pending") from e
        if on_poll is not None:
            on_poll(client, tid)
        for s in receipt.slots:
            watch.manifest(tid, s.slot, s.manifest_cid)
        if receipt.outcome == "refunded" and attempt < retries:
            continue  # every slot slashed or expired: post it again, from the credit's twin in the balance
        break
    if receipt.outcome != "verified" or not receipt.final_root:
        tb = client.failure_traceback(tid)[-3000:]
        detail = f":\n{tb}" if tb else ""
        again = f" after {len(tried)} tries (retries={retries})" if len(tried) > 1 else ""
        raise RemoteTaskError(
            f"{who}: task {tid} ended {receipt.outcome!r}{again}, with no verified weights{detail}\n"
            f"{_money(net, client, tried)}. `gensyn task show {tid}` shows each slot",
            task_id=tid, outcome=receipt.outcome, traceback=tb,
        )  # fmt: skip
    path = client.fetch_result(tid, tmp / "final.safetensors")
    ck = ree.load_checkpoint(path, expected_root=receipt.final_root)
    txs = list(receipt.transactions or client.transactions.get(tid, []))
    return RemoteResult(tid, receipt, ck, txs, dict(watch.metrics), tried[:-1], spec)


def _unsettled(net: Any, tid: int, timeout: float, who: str) -> str:
    from coordinator.accounts import format_amount

    escrow = format_amount(int(net.protocol.get_task(tid)["p"]["budget"]))
    if net.embedded:
        return (
            f"{who}: task {tid} is not settled after {timeout:.0f}s, and the embedded devnet stops "
            "with this call (its tokens were test tokens). Pass a larger timeout=, or configure a "
            "network (network.rpc_url) to re-attach later with task_id="
        )
    return (
        f"{who}: task {tid} is not settled after {timeout:.0f}s. Its escrow ({escrow}) stays in the "
        f"task market until it settles, and then pays the solver or is refunded to "
        f"{net.account.address}. Re-attach with {_reattach(who, tid)}; `gensyn task show "
        f"{tid}` says which slot waits for what; nobody claimed it? `gensyn task cancel {tid}`, "
        "then `gensyn withdraw`"
    )


def _reattach(who: str, tid: int) -> str:
    """How the caller named by ``who`` re-attaches to task ``tid``."""
    if who.startswith("gensyn launch"):
        return f"`gensyn launch --remote --task-id {tid} SCRIPT`"
    return f"{who.split('(')[0]}(task_id={tid})"


# ---------------------------------------------------------------------- dry run


@dataclass
class Estimate:
    """What a task would cost, in token base units, and what one step of it did here."""

    budget: int
    replicas: int
    spot_checks: int
    verifier_fees: int
    escrow: int  # taken from the client's balance when the task is posted
    fee_bps: int
    fee_burned: int  # of the budget, burned when the solvers are paid
    solver_pay: int
    bond: int  # each solver locks it from its own stake; not the client's money
    steps: int
    first_loss: float | None = None
    step_seconds: float = 0.0
    bundle_bytes: int = 0

    def describe(self) -> str:
        """One paragraph for a person."""
        from coordinator.accounts import format_amount as f

        loss = "" if self.first_loss is None else f", loss {self.first_loss:.6g}"
        return (
            f"dry run: step 1 of {self.steps} ran in a clean subprocess in {self.step_seconds:.2f}s"
            f"{loss}; bundle {self.bundle_bytes} bytes. Posting it would escrow {f(self.escrow)} "
            f"(budget {f(self.budget)} for {self.replicas} solver(s) + verifier fees "
            f"{f(self.verifier_fees)}); the {self.fee_bps / 100:g}% protocol fee burns "
            f"{f(self.fee_burned)} and the solvers get {f(self.solver_pay)}; each solver locks a "
            f"bond of {f(self.bond)} of its own stake. Nothing was paid and no chain was touched."
        )


def estimate(spec: Any, *, fee_bps: int = FEE_BPS) -> Estimate:
    """Price ``spec`` as TaskMarket would (``postTask`` escrow, ``finalize`` fee per solver share)."""
    k, spots = spec.replicas, spec.spot_checks
    share = spec.budget // k
    shares = [share] * (k - 1) + [spec.budget - share * (k - 1)]
    fee = sum(s * fee_bps // BPS for s in shares)
    fees = spots * spec.verifier_fee
    return Estimate(spec.budget, k, spots, fees, spec.budget + fees, fee_bps, fee, spec.budget - fee,
                    spec.bond, spec.steps)  # fmt: skip


def dry_run(spec: Any, files: Mapping[str, bytes], *, argv: list[str] | None = None,
            timeout: float | None = 600.0) -> Estimate:  # fmt: skip
    """Run step 1 of the task in a clean subprocess (no chain, no store, nothing paid); price it.

    The subprocess runs with ``python -P`` (the working directory is not on
    ``sys.path``), so the job's code is found only in the bundle, as on a solver.
    """
    from coordinator.tasks import RunRequest, SubprocessExecutor

    cmd = argv or [sys.executable, "-P", "-m", "gensyn_integrations._cli.node", "--exec"]
    with tempfile.TemporaryDirectory(prefix="gensyn-dry-run-") as tmp:
        bdir = Path(tmp) / "bundle"
        for name, data in files.items():
            (bdir / name).parent.mkdir(parents=True, exist_ok=True)
            (bdir / name).write_bytes(data)
        t0 = time.perf_counter()
        res = SubprocessExecutor(cmd, timeout=timeout).run(
            RunRequest(spec, bdir, Path(tmp) / "out", end_step=min(1, spec.steps))
        )
        took = time.perf_counter() - t0
    if res.failed:
        raise RemoteTaskError(f"dry run: step 1 of the task raised:\n{res.traceback[-3000:]}",
                              task_id=0, outcome="failed", traceback=res.traceback)  # fmt: skip
    est = estimate(spec)
    est.first_loss = res.losses[0] if res.losses else None
    est.step_seconds = took
    est.bundle_bytes = sum(len(v) for v in files.values())
    return est
