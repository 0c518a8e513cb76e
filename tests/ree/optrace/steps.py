"""A tiny training step to trace: an MLP with dropout, Adam, and two micro-batches."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import ree
from ree.optrace import OpTracer

IN, HIDDEN, OUT, ROWS, MICRO = 4, 8, 2, 3, 2


@dataclass
class Job:
    """A model, its optimizer, and the batch of the traced step (step 2)."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    batch: dict[str, torch.Tensor]


def make_job(seed: int) -> Job:
    """Build the job for ``seed`` and run step 1 untraced, so Adam has state at step 2."""
    # Every generator the state root covers (rng/torch_cpu, rng/python, rng/numpy) is
    # seeded here: the honest trace is cached, and other tests move the global ones.
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Dropout(0.25), torch.nn.Linear(HIDDEN, OUT))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = [_batch(seed * 100 + s) for s in (1, 2)]
    run_step(model, opt, batches[0])
    return Job(model, opt, batches[1])


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for m in range(MICRO):
        out[f"mb{m}/x"] = torch.randn(ROWS, IN, generator=g)
        out[f"mb{m}/y"] = torch.randn(ROWS, OUT, generator=g)
    return out


def run_step(model: torch.nn.Module, opt: torch.optim.Optimizer,
             batch: dict[str, torch.Tensor], micro: list[int] | None = None) -> None:
    """One optimizer step over the micro-batches ``micro`` (all of them by default)."""
    opt.zero_grad()
    for m in range(MICRO) if micro is None else micro:
        loss = torch.nn.functional.mse_loss(model(batch[f"mb{m}/x"]), batch[f"mb{m}/y"]) / MICRO
        loss.backward()
    opt.step()


def trace_step(seed: int, tracer_cls: Callable[..., OpTracer] = OpTracer, *,
               keep: tuple[int, ...] = (), micro: list[int] | None = None,
               permute: bool = False) -> OpTracer:
    """Trace step 2 of the job for ``seed``; the keyword arguments are adversaries' levers."""
    job = make_job(seed)
    state = ree.capture_state(job.model, job.opt, step=1)
    batch = job.batch
    if permute:  # rows reordered within every micro-batch, consistently for x and y
        shift = 1 + seed % (ROWS - 1)  # never the identity
        batch = {k: v.roll(shift, dims=0).clone() for k, v in batch.items()}
    tracer = tracer_cls(state, batch, step=2, keep=keep)
    with tracer:
        run_step(job.model, job.opt, batch, micro)
    return tracer
