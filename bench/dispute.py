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

Run: ``PYTHONPATH=. .venv/bin/python bench/dispute.py [--sizes 64 1024]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.chain import EventPoller, Outcome, Stage  # noqa: E402
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


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 1024, 16384])
    a = ap.parse_args()
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
