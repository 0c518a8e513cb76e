"""Strict-mode overhead: step time of strict vs default ops, measured in one run.

Prints one table row per model: the median step time with default ops, with
strict mode (steps alternate between the two, so both see the same machine
load), and their ratio (issue 9 targets <= 2x on CPU for the ~10M GPT-2,
<= 1.5x on GPU). Models are Hugging Face GPT-2s built from a config (eager
attention, nothing downloaded). Also prints the strict matmul's cost against
fp32 ``@`` for the GEMM shapes of the 10M model, with both errors against a
float64 reference (relative to the largest output).

``--clock thread`` times CPU runs with the calling thread's CPU time instead of
the wall clock: with ``--threads 1`` all the work runs on that thread, so on a
machine that other jobs load, the ratio still measures the work, not the queue.
The header prints the load average the run saw.

    .venv/bin/python bench/strict_overhead.py [--device cpu] [--threads 1] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from ree.strict import StrictGenerator, StrictMode, strict_matmul

MODELS = {
    # name: (vocab, ctx, width, layers, heads, batch, seq)
    "gpt2-tiny": (1000, 64, 64, 2, 2, 8, 64),
    "gpt2-10M": (16384, 128, 256, 8, 8, 8, 128),
}


def _gpt2(
    vocab: int, ctx: int, width: int, layers: int, heads: int, device: str
) -> torch.nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=ctx,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(cfg).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


CLOCK: Callable[[], float] = time.perf_counter


def _time_once(step: Callable[[], None], device: str) -> float:
    _sync(device)
    t0 = CLOCK()
    step()
    _sync(device)
    return CLOCK() - t0


def _time_pair(
    a: Callable[[], None], b: Callable[[], None], steps: int, device: str
) -> tuple[float, float]:
    """Median times of ``a`` and ``b``, run alternately so that both see the same machine load."""
    a()  # warm-up
    b()
    ta, tb = [], []
    for _ in range(steps):
        ta.append(_time_once(a, device))
        tb.append(_time_once(b, device))
    return statistics.median(ta), statistics.median(tb)


def bench_model(name: str, device: str, steps: int) -> tuple[float, float, int]:
    """Median step time (default, strict) of one AdamW training step, and the parameter count."""
    vocab, ctx, width, layers, heads, batch, seq = MODELS[name]
    model = _gpt2(vocab, ctx, width, layers, heads, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    mode = StrictMode(StrictGenerator(0))

    def step() -> None:
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()

    def strict_step() -> None:
        with mode:
            step()

    default, strict = _time_pair(step, strict_step, steps, device)
    return default, strict, sum(p.numel() for p in model.parameters())


def _rel_err(c: torch.Tensor, ref: torch.Tensor) -> float:
    return ((c.double() - ref).abs().max() / ref.abs().max()).item()


def bench_matmul(device: str, reps: int) -> list[tuple[str, float, float, float, float]]:
    """fp32 ``@`` vs strict matmul: times and errors, for the 10M model's GEMM shapes."""
    rows = []
    for m, k, n in (
        (1024, 256, 768),
        (1024, 256, 1024),
        (1024, 1024, 256),
        (256, 1024, 1024),
        (1024, 256, 16384),
    ):
        a = torch.randn(m, k, device=device)
        b = torch.randn(k, n, device=device)
        fp32, strict = _time_pair(
            lambda a=a, b=b: a @ b,  # type: ignore[misc]
            lambda a=a, b=b: strict_matmul(a, b),  # type: ignore[misc]
            reps,
            device,
        )
        ref = a.double() @ b.double()
        errs = (_rel_err(a @ b, ref), _rel_err(strict_matmul(a, b), ref))
        rows.append((f"{m}x{k}x{n}", fp32, strict, *errs))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads on CPU")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-matmul", action="store_true")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    args = parser.parse_args()
    if args.clock == "thread":
        if args.device != "cpu" or args.threads != 1:
            parser.error("--clock thread measures CPU runs with --threads 1 only")
        global CLOCK
        CLOCK = time.thread_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    label = (
        torch.cuda.get_device_name()
        if dev.startswith("cuda")
        else f"CPU ({torch.backends.cpu.get_cpu_capability()}, {args.threads} threads)"
    )
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"device: {label}; torch {torch.__version__}; clock {args.clock}; load average {load}")
    print(f"{'model':<12} {'params':>10} {'default s':>10} {'strict s':>10} {'ratio':>7}")
    for name in args.models.split(","):
        default, strict, params = bench_model(name, dev, args.steps)
        print(
            f"{name:<12} {params:>10,} {default:>10.4f} {strict:>10.4f} {strict / default:>6.2f}x"
        )
    if not args.no_matmul:
        print(
            f"\n{'matmul MxKxN':<18} {'fp32 ms':>9} {'strict ms':>10} {'ratio':>7}"
            f" {'fp32 err':>9} {'strict err':>10}"
        )
        for shape, fp32, strict, e32, es in bench_matmul(dev, args.steps):
            print(
                f"{shape:<18} {fp32 * 1e3:>9.2f} {strict * 1e3:>10.2f} {strict / fp32:>6.2f}x"
                f" {e32:>9.1e} {es:>10.1e}"
            )


if __name__ == "__main__":
    main()
