"""Lightning overhead: the executor role against plain Lightning, and a devnet ``fit`` against a local one.

(a) ``GensynStrategy(role="executor")`` (the REE's determinism flags, the seeded
    sampler, a state root every ``commit_interval`` steps) against plain
    Lightning (``SingleDeviceStrategy("cpu")``): the same MLP, data and thread
    count. The step time is taken between ``on_train_batch_start`` hooks after a
    warm-up, so it includes the root hashing of the previous batch's end. Runs are
    interleaved (the order rotates every repeat) and the median is printed. The
    model is sized so a plain step takes at least ``--min-step-ms``; the batch is
    doubled until it does. The "no roots" row commits only the start and end roots:
    it is the cost of the REE without hashing. The target is <= 5% at the default
    ``commit_interval``.
(b) An end-to-end ``fit`` with the client role on the embedded devnet (start the
    chain, deploy, ship, solve, verify, download) against the same ``fit`` run
    here with plain Lightning, once each.

    .venv/bin/python bench/lightning_overhead.py [--repeats 3] [--steps 30] [--commit-intervals 1,10,30] [--no-devnet]

Figures on a shared machine are noisy: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

QUIET: dict[str, Any] = {
    "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
    "enable_model_summary": False, "enable_progress_bar": False, "num_sanity_val_steps": 0,
}  # fmt: skip
NO_ROOTS = 10**9  # a commit_interval past the run: the start and end roots only


class Net(pl.LightningModule):
    """An MLP classifier trained with AdamW (its state is 3x the parameters: all of it is hashed)."""

    def __init__(self, features: int = 256, width: int = 512, depth: int = 3, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()  # the client role rebuilds the module from these
        layers: list[nn.Module] = [nn.Linear(features, width), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 10))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        # A scheduler on purpose: a remote fit of a module without one cannot resume its
        # segments (SafetensorsCheckpointIO.load_checkpoint leaves out "lr_schedulers").
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1000, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class StepTimer(pl.Callback):
    """The time at every ``on_train_batch_start``: consecutive differences are whole steps."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())


class ReeFlags(pl.Callback):
    """Plain Lightning under the REE's determinism flags and seeds only (no sampler, no roots)."""

    def __init__(self, threads: int) -> None:
        self.threads, self.snapshot = threads, None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        import ree

        self.snapshot = ree.apply_determinism("device", 0, threads=self.threads)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        import ree

        if self.snapshot is not None:
            ree.restore_determinism(self.snapshot)
            self.snapshot = None


def loader(samples: int, features: int, batch: int) -> DataLoader[Any]:
    """Seeded random inputs and labels, shuffled (the executor swaps in the REE's seeded sampler)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(samples, features, generator=g)
    return DataLoader(TensorDataset(x, torch.randint(0, 10, (samples,), generator=g)), batch_size=batch,
                      shuffle=True, drop_last=True)  # fmt: skip


def model(a: argparse.Namespace, width: int | None = None) -> Net:
    torch.manual_seed(0)
    return Net(features=a.features, width=width or a.width, depth=a.depth)


def strategy(kind: str, commit_interval: int, threads: int) -> Any:
    """Plain Lightning's single-device strategy, or the executor role at ``commit_interval``."""
    if kind in ("plain", "flags"):
        torch.set_num_threads(threads)  # the executor pins the REE's thread count; so does plain
        return pl.strategies.SingleDeviceStrategy(device="cpu")
    from gensyn_integrations.lightning import GensynStrategy

    return GensynStrategy(role="executor", commit_interval=commit_interval, threads=threads)


def step_time(a: argparse.Namespace, batch: int, kind: str, commit_interval: int = 1) -> tuple[float, Any]:
    """Seconds per optimizer step over ``a.steps`` steps after ``a.warmup``; and the Trainer."""
    timer = StepTimer()
    callbacks: list[Any] = [timer, ReeFlags(a.threads)] if kind == "flags" else [timer]
    trainer = pl.Trainer(strategy=strategy(kind, commit_interval, a.threads), callbacks=callbacks,
                         max_steps=a.warmup + a.steps + 1, **QUIET)  # fmt: skip
    trainer.fit(model(a), loader(batch * (a.warmup + a.steps + 1), a.features, batch))
    s = timer.starts
    return (s[a.warmup + a.steps] - s[a.warmup]) / a.steps, trainer


def size_batch(a: argparse.Namespace) -> tuple[int, float]:
    """The smallest power-of-two multiple of ``--batch`` whose plain step takes ``--min-step-ms``."""
    batch = a.batch
    while True:
        t = min(step_time(a, batch, "plain")[0] for _ in range(2))
        if t * 1e3 >= a.min_step_ms or batch >= 1 << 16:
            return batch, t
        batch *= 2


def root_cost(trainer: Any, repeats: int = 5) -> tuple[float, int]:
    """Seconds to capture and hash one state root of the trained run; and the state's bytes."""
    cb = trainer.strategy.trace_callback
    tree = cb.capture(trainer)
    nbytes = sum(t.numel() * t.element_size() for t in tree.leaves.values() if isinstance(t, torch.Tensor))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _ = cb.capture(trainer).root
        times.append(time.perf_counter() - t0)
    return statistics.median(times), nbytes


def part_a(a: argparse.Namespace) -> None:
    batch, plain0 = size_batch(a)
    params = sum(p.numel() for p in model(a).parameters())
    print(f"(a) executor vs plain Lightning: MLP {a.features}-{a.width}x{a.depth}-10 ({params / 1e6:.2f}M params), "
          f"batch {batch}, {a.threads} thread(s); plain step {plain0 * 1e3:.1f} ms (min {a.min_step_ms} ms)")  # fmt: skip
    if plain0 * 1e3 < a.min_step_ms:
        print(f"    warning: the plain step is under {a.min_step_ms} ms even at batch {batch}")
    variants = [("plain", 0), ("flags", 0)] + [("executor", c) for c in a.commit_intervals] + [("executor", NO_ROOTS)]
    times: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    last: Any = None
    for r in range(a.repeats):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:  # rotate: each variant runs early and late
            t, trainer = step_time(a, batch, *v)
            times[v].append(t)
            if v[0] == "executor":
                last = trainer
    base = statistics.median(times["plain", 0])
    print(f"    {'run':38} {'median step':>12} {'ratio':>7} {'overhead':>9}   (all {a.repeats} repeats, ms)")
    for kind, c in variants:
        med = statistics.median(times[kind, c])
        if kind == "plain":
            name = "plain Lightning (SingleDevice cpu)"
        elif kind == "flags":
            name = "plain + the REE's flags and seeds"
        else:
            default = " (default)" if c == _default_interval() else ""
            name = f"executor, commit_interval={c}{default}" if c != NO_ROOTS else "executor, no roots (start/end only)"
        runs = " ".join(f"{x * 1e3:.1f}" for x in times[kind, c])
        print(f"    {name:38} {med * 1e3:9.2f} ms {med / base:6.3f}x {100 * (med / base - 1):+8.1f}%   ({runs})")
    cost, nbytes = root_cost(last)
    print(f"    one state root (capture + hash): {cost * 1e3:.2f} ms for {nbytes / 2**20:.1f} MiB of state "
          f"({nbytes / cost / 2**30:.2f} GiB/s) = {100 * cost / base:.1f}% of a plain step")  # fmt: skip
    print(f"    hashing alone stays under 5% of a step from commit_interval={math.ceil(cost / (0.05 * base))}")
    plain_us, seeded_us = sample_cost(a.features)
    print(f"    the executor's data path: {seeded_us:.0f} us a sample through ree.SeededDataset (it saves, seeds "
          f"and restores the torch, random and numpy RNGs around each __getitem__) against {plain_us:.0f} us plain: "
          f"{(seeded_us - plain_us) * batch / 1e3:.1f} ms a step at batch {batch} = "
          f"{100 * (seeded_us - plain_us) * batch / 1e6 / base:.0f}% of a plain step")  # fmt: skip


def sample_cost(features: int, n: int = 2048) -> tuple[float, float]:
    """Microseconds to fetch one sample of a TensorDataset, plain and through ``ree.SeededDataset``."""
    import ree

    ds = TensorDataset(torch.randn(n, features), torch.zeros(n, dtype=torch.long))
    out = []
    for d in (ds, ree.SeededDataset(ds, seed=0)):
        t0 = time.perf_counter()
        for i in range(n):
            d[i]
        out.append((time.perf_counter() - t0) / n * 1e6)
    return out[0], out[1]


def part_b(a: argparse.Namespace) -> None:
    from gensyn_integrations.lightning import GensynStrategy

    data = loader(a.devnet_batch * a.devnet_steps, a.features, a.devnet_batch)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    pl.Trainer(strategy=strategy("plain", 1, a.threads), max_steps=a.devnet_steps, **QUIET).fit(model(a, a.devnet_width), data)
    local = time.perf_counter() - t0
    s = GensynStrategy()
    t0 = time.perf_counter()
    pl.Trainer(strategy=s, max_steps=a.devnet_steps, **QUIET).fit(model(a, a.devnet_width), data)
    remote = time.perf_counter() - t0
    r = s.receipt
    print(f"(b) devnet fit (client role, GensynStrategy() defaults) vs local plain fit: MLP width {a.devnet_width}, "
          f"{a.devnet_steps} steps, batch {a.devnet_batch}, one run each")  # fmt: skip
    print(f"    local fit {local:.1f} s; devnet fit {remote:.1f} s (task {r.task_id}, {r.outcome}); "
          f"ratio {remote / local:.1f}x; fixed cost of the network {remote - local:.1f} s")  # fmt: skip


def _default_interval() -> int:
    import inspect

    from gensyn_integrations.lightning import GensynStrategy

    return int(inspect.signature(GensynStrategy.__init__).parameters["commit_interval"].default)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each variant (default %(default)s)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps a run (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default %(default)s)")
    ap.add_argument("--commit-intervals", default="1,10,30",
                    help="executor commit_interval values to time (default %(default)s)")  # fmt: skip
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128, help="starting batch for the sizing (default %(default)s)")
    ap.add_argument("--min-step-ms", type=float, default=20.0, help="plain step to size for (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default %(default)s)")
    ap.add_argument("--devnet-steps", type=int, default=20, help="(b)'s steps (default %(default)s)")
    ap.add_argument("--devnet-batch", type=int, default=64, help="(b)'s batch (default %(default)s)")
    ap.add_argument("--devnet-width", type=int, default=128,
                    help="(b)'s MLP width: the network's fixed cost dominates (default %(default)s)")  # fmt: skip
    ap.add_argument("--no-devnet", action="store_true", help="skip (b)")
    a = ap.parse_args(argv)
    a.commit_intervals = [int(c) for c in a.commit_intervals.split(",") if c]
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=".*does not have many workers")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    part_a(a)
    if not a.no_devnet:
        part_b(a)
    print(f"load average at end:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
