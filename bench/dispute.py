"""A real dispute, end to end, at N = 64, 1024 and 16384 optimizer steps: rounds, gas, time.

Two solvers run the same task under ``replicate:2`` on py-evm; one perturbs
the weights right after step N/2 + 1. The honest one challenges; both play
levels 1 and 2 with real per-step roots recomputed from REE checkpoints; a
drawn referee re-executes the disputed step. Printed per N:

* rounds taken, and the bound ceil(log2(intervals)) + ceil(log2(commit_interval)) + 2;
* gas of the dispute (challenge, every move, the ruling, the settlement);
* wall time of the dispute, from the challenge to the resolution;
* the referee's compute (re-executing the step from the agreed checkpoint,
  checkpoint load and state hashing included) as a multiple of one training
  step of the full run (its wall time / N).

Then spot verification (issue #6), under the default policy
(:func:`coordinator.dispute.spot_policy`: 44 checks, at least 440 intervals):

* the Python draw checked equal to TaskMarket.spotIndex on py-evm for every
  verifier of a few real reveals;
* the detection probability against the fraction f of faked intervals,
  measured over seeded trials of that draw, beside the theory 1 - (1 - f)^s
  (the chain samples with replacement: each verifier's index is drawn
  independently) and, for comparison, sampling without replacement;
* the extra compute of the policy (re-executed steps over training steps) for
  jobs of several lengths.

Then (``--summary``) one line over >= 200 seeded trials across every adversary of
issue #6: operator-level faults refereed from op traces stored under CIDs (a
1-ulp op, an inconsistent trace, a reordered batch, a forged batch root, a
skipped micro-batch, swapped micro-batches; roles alternate), whole disputes
through all three levels on py-evm, spot-check fakers (f = 10%), withheld
checkpoints on py-evm, and honest parties against themselves: the detection
rate, the on-chain rounds, the referee's compute in ops (and as a fraction of
one step's ops), and false slashes of honest parties.

Run: ``PYTHONPATH=. .venv/bin/python bench/dispute.py [--sizes 64 1024] [--spot-only] [--summary]``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.chain import EventPoller, Outcome, Stage  # noqa: E402
from coordinator.dispute import (  # noqa: E402
    detection_without_replacement,
    simulate_detection,
    spot_policy,
)
from coordinator.nodes import Referee, Solver  # noqa: E402
from ree.optrace import find_divergence  # noqa: E402
from tests.coordinator.network.adversaries import PerturbingSolver  # noqa: E402
from tests.coordinator.network.net import Net, make_chain  # noqa: E402


class TimedExecutor:
    """Wraps an executor and adds up the wall time of its runs."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.spent, self.runs = inner, 0.0, 0

    def run(self, request: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.run(request)
        finally:
            self.spent += time.perf_counter() - t0
            self.runs += 1


class TimedReferee(Referee):
    """A referee whose executor is timed."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.executor = self.timer = TimedExecutor(self.executor)


class TimedSolver(Solver):
    """An honest solver that records the wall time of its full run."""

    run_time: float = 0.0

    def compute(self, *a, **kw):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        r = super().compute(*a, **kw)
        self.run_time = time.perf_counter() - t0
        return r


def one(n: int, root: Path) -> dict[str, float]:
    ci = max(2, 2 ** round(math.log2(n) / 2))
    net = Net(make_chain(), root)
    honest = net.add(TimedSolver)
    bad = net.add(PerturbingSolver, k=n // 2 + 1)
    ref_a, ref_b = net.add(TimedReferee), net.add(TimedReferee)
    tid = net.submit(steps=n, commit_interval=ci, policy="replicate:2")
    t_challenge = t_end = 0.0
    for _ in range(100_000):
        busy = False
        for node in net.nodes:
            busy = node.tick() or busy
        if not t_challenge and int(net.p.client.call(net.p.game.functions.disputeCount())):
            t_challenge = time.perf_counter()
        done = net.client.step(tid)
        if done and not busy and not net._open_disputes():
            t_end = time.perf_counter()
            break
        if not busy:
            net.chain.client.advance_time(601)
    d = next(
        net.p.get_dispute(i)
        for i in range(1, int(net.p.client.call(net.p.game.functions.disputeCount())) + 1)
        if net.p.get_dispute(i)["defender"] == bad.address
    )
    assert d["step"] == n // 2 + 1
    assert Outcome(d["outcome"]) == Outcome.CHALLENGER_WON
    assert Stage(d["stage"]) == Stage.RESOLVED
    did = next(i for i in range(1, 3) if net.p.get_dispute(i)["defender"] == bad.address)
    events = EventPoller(net.p.client, [net.p.game, net.p.market], from_block=0).poll()
    txs = {e.tx_hash for e in events if e.args.get("disputeId") == did}
    gas = sum(net.p.client.w3.eth.get_transaction_receipt(h)["gasUsed"] for h in txs)
    bound = math.ceil(math.log2(-(-n // ci))) + math.ceil(math.log2(ci)) + 2
    step_time = honest.run_time / n
    referee = ref_a.timer.spent + ref_b.timer.spent
    return {"N": n, "ci": ci, "rounds": d["rounds"], "bound": bound, "gas": gas,
            "wall_s": t_end - t_challenge, "step_ms": step_time * 1e3,
            "referee_s": referee, "referee_steps": referee / step_time}  # fmt: skip


def spot_mirror_check(reveals: int = 5) -> int:
    """Compare the Python draw with TaskMarket.spotIndex over real reveals; returns the draws compared."""
    from coordinator.chain import ChainClient, leaf_count, spot_index
    from tests.coordinator.chain.chain_helpers import TraceModel, make_world, solve

    w = make_world(ChainClient.in_process())
    pol = spot_policy(1000)
    ci, steps = pol.commit_interval, pol.steps
    compared = 0
    for r in range(reveals):
        tid = w.p.post_task(w.alice, w.task(commit_interval=ci, total_steps=steps, spot_checks=pol.checks,
                                            initial_root=TraceModel().leaf(0, ci, steps))).value  # fmt: skip
        assert tid is not None
        slot = solve(w, w.bob if r % 2 else w.carol, tid, TraceModel(), ci, steps)
        w.client.mine(2)  # the block after the reveal fixes the draw
        seed = w.p.draw_seed(tid, slot)
        for v in range(pol.checks):
            addr = "0x" + hashlib.sha256(f"verifier-{r}-{v}".encode()).digest()[:20].hex()
            got = w.p.spot_index(tid, slot, addr)
            if got != spot_index(seed, addr, leaf_count(steps, ci)):
                raise AssertionError(f"draw differs from spotIndex for {addr} in task {tid}")
            compared += 1
    return compared


def spot_report(trials: int) -> None:
    """Print the spot-verification tables (see the module docstring)."""
    compared = spot_mirror_check()
    pol = spot_policy(1000)
    print(f"\nspot checks: Python draw == TaskMarket.spotIndex on {compared} draws (py-evm)")
    print(f"default policy for {pol.steps} steps: s = {pol.checks} checks, commit_interval = "
          f"{pol.commit_interval}, {pol.intervals} intervals, extra compute {pol.extra_compute:.1%}")  # fmt: skip
    print(f"{'f':>5} {'faked':>5} {'trials':>6} {'measured':>8} {'theory (with repl.)':>19} "
          f"{'|diff|/sigma':>12} {'without repl.':>13}")  # fmt: skip
    for f in (0.01, 0.05, 0.10, 0.20, 0.50):
        r = simulate_detection(f, intervals=pol.intervals, checks=pol.checks, trials=trials,
                               seed=int(f * 1000))  # fmt: skip
        wo = detection_without_replacement(r.faked, r.intervals, r.checks)
        print(f"{f:>5.0%} {r.faked:>5} {r.trials:>6} {r.measured:>8.2%} {r.theory:>19.2%} "
              f"{abs(r.measured - r.theory) / r.sigma:>12.2f} {wo:>13.2%}")  # fmt: skip
    print(f"\n{'steps':>9} {'ci':>6} {'intervals':>9} {'s':>3} {'extra compute':>13} "
          f"{'P(detect | f=10%)':>17} {'meets target':>12}")  # fmt: skip
    for steps in (100, 439, 440, 1_000, 10_000, 1_000_000):
        p = spot_policy(steps)
        print(f"{steps:>9} {p.commit_interval:>6} {p.intervals:>9} {p.checks:>3} {p.extra_compute:>13.1%} "
              f"{p.detection(0.10):>17.2%} {'yes' if p.meets_target else 'no':>12}")  # fmt: skip


def summary() -> None:
    """The issue #6 summary over seeded trials of every adversary (see the module docstring)."""
    from coordinator.chain import ChainClient
    from coordinator.dispute import OpLevelError, judge_ops, put_op_inputs, put_op_trace
    from coordinator.storage import LocalStore
    from ree.optrace import CHALLENGER, DEFENDER
    from tests.coordinator.chain.chain_helpers import make_world
    from tests.coordinator.chain.test_chain_ops import play
    from tests.ree.optrace.adversaries import Fault, attacks, honest
    from tests.ree.optrace.steps import trace_step

    rows: list[
        tuple[str, int, int, int, int, float, int]
    ] = []  # name, trials, caught, rounds, ops, frac, false

    with tempfile.TemporaryDirectory(prefix="gensyn-summary-") as tmp:
        root = Path(tmp)
        store = LocalStore(root / "store")
        plan = [(Fault.ULP, range(20), 5), (Fault.INCONSISTENT, range(20), 3)] + [
            (f, range(12), 1) for f in (Fault.REORDER_OWN_ROOT, Fault.REORDER_FORGED,
                                        Fault.SKIP_MICRO, Fault.SWAP_MICRO)]  # fmt: skip
        for fault, seeds, per in plan:
            caught = ops = false = 0
            frac = 0.0
            trials = attacks(fault, seeds, per_seed=per)
            for a in trials:
                good, cheat = honest(a.seed).trace, a.cheat()
                honest_role = DEFENDER if a.seed % 2 == 0 else CHALLENGER
                d, c = (good, cheat) if honest_role == DEFENDER else (cheat, good)
                posted = {DEFENDER: put_op_trace(store, d), CHALLENGER: put_op_trace(store, c)}
                inputs: list[str] = []
                div = find_divergence(good.records, cheat.records)
                if div is not None and div.inputs_agree:
                    kept = trace_step(a.seed, keep=(div.index,))
                    inputs.append(put_op_inputs(store, kept.trace.records[div.index],
                                                kept.kept[div.index], root))  # fmt: skip
                # the referee derives the step's batch root from the task's data and cursor
                j = judge_ops(store=store, traces=posted, state_root=good.state_root, input_cids=inputs,
                              workdir=root / "ref", batch=(good.batch_root, good.batch_n))  # fmt: skip
                won = j.defender_wins == (honest_role == DEFENDER)
                caught += won
                false += not won
                ops = max(ops, j.ops_executed)
                frac = max(frac, j.ops_executed / good.n)
            rows.append((f"op trace: {fault.value}", len(trials), caught, 0, ops, frac, false))
        # honest parties against each other: identical traces, nothing runs at the op level and
        # the referee is sent to the whole step (which the honest claim passes)
        agree = 0
        for seed in range(20):
            t = honest(seed).trace
            posted = {
                DEFENDER: put_op_trace(store, t),
                CHALLENGER: put_op_trace(store, trace_step(seed).trace),
            }
            try:
                judge_ops(store=store, traces=posted, state_root=t.state_root, input_cids=[],
                          workdir=root / "ref")  # fmt: skip
            except OpLevelError:
                agree += 1
        rows.append(("honest vs honest (no fault)", 20, 20, 0, 0, 0.0, 20 - agree))
        # whole disputes, levels 1-3 on py-evm, with the op-level ruling on chain
        w = make_world(ChainClient.in_process())
        chain_trials = [*attacks(Fault.ULP, range(3)), *attacks(Fault.INCONSISTENT, range(3, 6))]
        caught = rounds = ops = false = 0
        frac = 0.0
        for a in chain_trials:
            dd = play(w, a, store, root / "chain")
            honest_won = (Outcome(dd["outcome"]) == Outcome.DEFENDER_WON) == dd[
                "honest_is_defender"
            ]
            named = dd["badOp"] == a.target + 1 if a.fault is Fault.ULP else dd["badOp"] >= 1
            caught += honest_won and named
            false += not honest_won
            rounds = max(rounds, int(dd["rounds"]))
            ops = max(ops, dd["judgement"].ops_executed)
            frac = max(frac, dd["judgement"].ops_executed / dd["judgement"].records)
        bound = int(w.p.client.call(w.p.game.functions.roundBound(9, 4)))
        rows.append((f"full dispute on chain (bound {bound} rounds)", len(chain_trials), caught, rounds,
                     ops, frac, false))  # fmt: skip
        rows.append(withheld_trials(w))
    rows.extend(node_trials())
    r = simulate_detection(0.10, intervals=440, checks=44, trials=1000, seed=7)
    rows.append(("spot: solver fakes 10% of 440 intervals", r.trials, r.caught, 0, 0, 0.0, 0))
    print(f"\n{'adversary':<66} {'trials':>6} {'caught':>7} {'rounds':>6} {'ref ops':>7} "
          f"{'ops/step':>8} {'false slash':>11}")  # fmt: skip
    for name, n, cc, rd, op, fr, fs in rows:
        print(f"{name:<66} {n:>6} {cc:>7} {rd or '-':>6} {op:>7} {fr:>8.1%} {fs:>11}")
    adv = [x for x in rows if not x[0].startswith("honest")]
    total, caught_all = sum(x[1] for x in adv), sum(x[2] for x in adv)
    print(f"\nSUMMARY: {sum(x[1] for x in rows)} seeded trials; detection {caught_all}/{total} = "
          f"{caught_all / total:.2%} (spot row: probabilistic, theory 99.03%); on-chain rounds <= "
          f"{max(x[3] for x in rows)} (bound {bound}); referee compute <= {max(x[4] for x in rows)} op "
          f"(<= {max(x[5] for x in rows):.1%} of a step's ops); false slashes of honest parties: "
          f"{sum(x[6] for x in rows)}")  # fmt: skip


def node_trials(per_fault: int = 3) -> list[tuple[str, int, int, int, int, float, int]]:
    """Whole disputes through the nodes: the parties' torch executors record the disputed step's
    op trace, post it and the divergent op's inputs; the drawn referee rules with ``ruleOp``.
    Targets are float ops of step 5 whose one-ulp error reaches the committed roots."""
    import shutil

    from coordinator.chain import Outcome
    from coordinator.tasks import RunRequest
    from ree.optrace import OpTrace
    from tests.coordinator.network.adversaries import InconsistentTraceSolver, UlpSolver
    from tests.coordinator.network.net import JOB, executor

    steps, ci, k = 8, 2, 5
    chain = make_chain()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gensyn-nodes-") as tmp:
        root = Path(tmp)
        spec = Net(chain, root / "probe").spec(steps=steps, commit_interval=ci)
        bdir = root / "bundle"
        bdir.mkdir()
        shutil.copy(JOB, bdir / "tiny_job.py")
        ex = executor()
        full = ex.run(RunRequest(spec, bdir, root / "full", end_step=steps))
        pre = ex.run(RunRequest(spec, bdir, root / "pre", end_step=k - 1, root_every=1))
        t = ex.run(RunRequest(spec, bdir, root / "t", start_checkpoint=pre.checkpoints[k - 1],
                              start_step=k - 1, end_step=k, root_every=1, op_trace=[]))  # fmt: skip
        assert t.op_trace is not None, t.op_trace_error
        trace = OpTrace.loads(t.op_trace.read_bytes())
        targets: list[int] = []
        for r in trace.records:  # float ops whose ulp changes the final root
            if len(targets) == per_fault:
                break
            if not r.op.startswith(("aten.mm", "aten.addmm", "aten.tanh", "aten.sub", "aten.pow")):
                continue
            bad = ex.run(RunRequest(spec, bdir, root / f"probe-{r.index}", end_step=steps,
                                    fault={"ulp_op": [k, r.index]}))  # fmt: skip
            if bad.final_root != full.final_root:
                targets.append(r.index)
        for cls in (UlpSolver, InconsistentTraceSolver):
            caught = rounds = ops = false = 0
            for n, op in enumerate(targets):
                snap = chain.client.snapshot()
                net = Net(chain, root / f"{cls.__name__}-{n}")
                net.add(Solver)
                liar = net.add(cls, k=k, op=op)
                net.add(TimedReferee)
                net.add(TimedReferee)
                tid = net.submit(steps=steps, commit_interval=ci, policy="replicate:2")
                net.drive(tid)
                count = int(chain.client.call(net.p.game.functions.disputeCount()))
                for i in range(1, count + 1):
                    d = net.p.get_dispute(i)
                    liar_lost = Outcome(d["outcome"]) == (
                        Outcome.CHALLENGER_WON if d["defender"] == liar.address
                        else Outcome.DEFENDER_WON)  # fmt: skip
                    at_op = d["badOp"] == op + 1 if cls is UlpSolver else d["badOp"] >= 1
                    caught += liar_lost and at_op
                    false += not liar_lost
                    rounds = max(rounds, int(d["rounds"]))
                for node in net.nodes:  # what each referee ran: ops (its log), or whole steps
                    if isinstance(node, TimedReferee) and node.log_path.exists():
                        ran = [int(m) for m in re.findall(r", (\d+) op run of", node.log_path.read_text())]
                        ops = max([ops, *ran, trace.n if node.timer.runs else 0])
                chain.client.revert(snap)
            trials = 2 * len(targets)  # each liar is defender once and challenger once
            what = "1-ulp op" if cls is UlpSolver else "inconsistent op trace"
            rows.append((f"through the nodes (torch executor): {what}", trials, caught, rounds, ops,
                         ops / trace.n, false))  # fmt: skip
    return rows


def withheld_trials(w: Any, n: int = 10) -> tuple[str, int, int, int, int, float, int]:
    """n solvers withhold a demanded checkpoint (slashed), n honest ones serve it (never slashed)."""
    from coordinator.chain import SlotState
    from coordinator.dispute import state_encodings, trace_tree
    from tests.coordinator.chain.test_chain_availability import post_and_reveal, roots, state

    w.p.govern(w.gov, "market", "setDataWindow", 900)
    caught = false = 0
    for k in range(2 * n):
        stake0 = w.p.stake_of(w.bob.address)["staked"]
        tid, slot = post_and_reveal(w)
        index = 1 + k % 4
        w.p.demand_checkpoint(w.dave, tid, slot, index)
        if k % 2:  # honest: serve it
            w.p.serve_checkpoint(w.bob, tid, slot, state_encodings(state(min(index * 2, 8))),
                                 trace_tree(roots()).proof(index).siblings)  # fmt: skip
            w.client.advance_time(3601)
            w.p.finalize(w.gov, tid, slot)
            false += w.p.stake_of(w.bob.address)["staked"] != stake0
        else:
            w.client.advance_time(901)
            w.p.data_timeout(w.dave, tid, slot)
            caught += SlotState(w.p.get_slot(tid, slot)["state"]) == SlotState.SLASHED
            w.p.stake(w.bob, stake0 - w.p.stake_of(w.bob.address)["staked"])  # top the bond back up
    return (f"withheld checkpoint (+{n} honest serves)", n, caught, 0, 0, 0.0, false)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 1024, 16384])
    ap.add_argument("--spot-only", action="store_true", help="only the spot-verification tables")
    ap.add_argument("--summary", action="store_true", help="only the issue #6 summary line")
    ap.add_argument("--spot-trials", type=int, default=2000, help="seeded trials per fraction")
    a = ap.parse_args()
    if a.spot_only:
        spot_report(a.spot_trials)
        return 0
    if a.summary:
        summary()
        return 0
    rows = []
    for n in a.sizes:
        with tempfile.TemporaryDirectory(prefix="gensyn-bench-") as tmp:
            rows.append(one(n, Path(tmp)))
        print(f"N={n} done", file=sys.stderr)
    print(f"{'N':>6} {'ci':>4} {'rounds':>6} {'bound':>5} {'gas':>10} {'dispute s':>9} "
          f"{'step ms':>8} {'referee s':>9} {'referee/step':>12}")  # fmt: skip
    for r in rows:
        print(f"{r['N']:>6} {r['ci']:>4} {r['rounds']:>6} {r['bound']:>5} {r['gas']:>10,} "
              f"{r['wall_s']:>9.1f} {r['step_ms']:>8.2f} {r['referee_s']:>9.2f} {r['referee_steps']:>11.0f}x")  # fmt: skip
    spot_report(a.spot_trials)
    summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
