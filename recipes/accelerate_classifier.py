"""Train a small classifier with accelerate under the REE, and write each rank's trace.

The one-line change from a plain accelerate script is the import of
``Accelerator``. Run it on 2 local CPU ranks with the config next to it::

    gensyn launch --config recipes/gensyn.yaml recipes/accelerate_classifier.py --out runs/clf

or with a plain accelerate config (``accelerate launch --config_file acc.yaml ...``);
the REE settings then come from ``GENSYN_*`` variables or ``./gensyn.yaml``.
Each rank writes ``trace-rank<i>.json`` to ``--out``: every rank records the same
roots. ``--save-at N --save-dir D`` saves the state after step N, and
``--resume D`` continues from it with the same roots as an uninterrupted run.

The same script runs on the network unchanged (the client role; one rank)::

    gensyn launch --remote --steps 12 recipes/accelerate_classifier.py --max-steps 12

It prints the receipt as JSON and writes the verified final REE checkpoint to
``gensyn-result.safetensors``; its root equals the last root of a local
one-rank run (``python recipes/accelerate_classifier.py --max-steps 12``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gensyn_integrations.accelerate import Accelerator


def dataset(n: int = 256, features: int = 8) -> TensorDataset:
    """A seeded, linearly separable toy problem (its own generator: not the training RNG)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, generator=g)
    return TensorDataset(x, (x @ w > 0).long())


def main(argv: Sequence[str] | None = None) -> int:
    """Train for ``--max-steps`` optimizer steps and write the trace of this rank."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/accelerate_classifier")
    p.add_argument("--max-steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--save-at", type=int, default=0)
    p.add_argument("--save-dir", default=None)
    p.add_argument("--resume", default=None)
    a = p.parse_args(argv)

    accelerator = Accelerator(gradient_accumulation_steps=a.grad_accum)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    loader = DataLoader(dataset(), batch_size=a.batch_size, shuffle=True)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if a.resume:
        accelerator.load_state(a.resume)

    saved = False
    while accelerator.gensyn_step < a.max_steps:
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = nn.functional.cross_entropy(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if a.save_at and accelerator.gensyn_step == a.save_at and not saved:
                accelerator.save_state(a.save_dir)
                saved = True
            if accelerator.gensyn_step >= a.max_steps:
                break

    trace = accelerator.finish_trace()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"trace-rank{accelerator.process_index}.json").write_bytes(trace.dumps())
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
