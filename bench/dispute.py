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

Run: ``PYTHONPATH=. .venv/bin/python bench/dispute.py [--sizes 64 1024] [--spot-only]``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
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
        seed = w.p.get_slot(tid, slot)["seed"]
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


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 1024, 16384])
    ap.add_argument("--spot-only", action="store_true", help="only the spot-verification tables")
    ap.add_argument("--spot-trials", type=int, default=2000, help="seeded trials per fraction")
    a = ap.parse_args()
    if a.spot_only:
        spot_report(a.spot_trials)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
