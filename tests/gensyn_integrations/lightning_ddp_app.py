"""GensynTraceCallback under Lightning's DDPStrategy: 2 CPU processes over gloo, each writes its traces.

Run as a script, never under pytest: ``strategy="ddp"`` re-runs the command line in
each child rank (NOTES.md)::

    MASTER_ADDR=127.0.0.1 MASTER_PORT=PORT python -m tests.gensyn_integrations.lightning_ddp_app \
        --out DIR [--runs lightning:0,lightning:1,pytorch_lightning:0] [--max-steps 8] [--commit-interval 2]

Each ``flavour:seed`` of ``--runs`` is one ``fit`` with a fresh Trainer, model and
loader; the ranks start once (the first Trainer spawns rank 1 and sets
``LOCAL_RANK``, so later Trainers reuse the processes and the gloo group), which
keeps the test to one launch. Rank ``r`` writes ``DIR/<flavour>-seed<seed>-rank<r>.json``
(the trace's JSON, plus the rank, world size and optimizer steps).

Lightning wraps the REE's seeded sampler in a ``DistributedSamplerWrapper``,
which does not forward ``set_epoch`` to it: past the first epoch the order comes
from the wrapper's own reshuffle of the REE sampler's epoch-0 order, which the
trace's data cursor does not describe (a run resumed there would read another
order). The job stays inside one epoch (128 samples, batch 8, 2 ranks: 8 steps
an epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

SAMPLES, BATCH, RANKS = 128, 8, 2
STEPS_PER_EPOCH = SAMPLES // (BATCH * RANKS)


def _pl(flavour: str) -> Any:
    if flavour == "pytorch_lightning":
        import pytorch_lightning

        return pytorch_lightning
    import lightning.pytorch

    return lightning.pytorch


def _callback_cls(flavour: str) -> Any:
    if flavour == "pytorch_lightning":
        from gensyn_integrations.pytorch_lightning import GensynTraceCallback

        return GensynTraceCallback
    from gensyn_integrations.lightning import GensynTraceCallback

    return GensynTraceCallback


def make_module(pl: Any) -> Any:
    """A small classifier with dropout (it draws from the training RNG on every rank), Adam and StepLR."""

    class Net(pl.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)  # the same initial weights on every rank and run
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1)
            )

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.Adam(self.parameters(), lr=1e-2)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Net()


def make_loader() -> DataLoader[Any]:
    """128 seeded samples of a linear rule, shuffled in batches of 8 (each rank gets half)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(SAMPLES, 8, generator=g)
    return DataLoader(TensorDataset(x, (x.sum(dim=1, keepdim=True) > 0).float()), batch_size=BATCH, shuffle=True)


def fit(flavour: str, seed: int, max_steps: int, commit_interval: int, out: Path) -> None:
    """One ``fit`` on the 2 ranks; this rank writes its trace."""
    pl = _pl(flavour)
    cb = _callback_cls(flavour)(commit_interval=commit_interval, seed=seed)
    trainer = pl.Trainer(
        strategy=pl.strategies.DDPStrategy(process_group_backend="gloo"), accelerator="cpu",
        devices=RANKS, max_steps=max_steps, callbacks=[cb], default_root_dir=str(out),
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(make_module(pl), train_dataloaders=make_loader())
    doc = {**cb.trace.to_json(), "rank": trainer.global_rank, "world_size": trainer.world_size,
           "optimizer_steps": cb.step}  # fmt: skip
    (out / f"{flavour}-seed{seed}-rank{trainer.global_rank}.json").write_text(json.dumps(doc))


def main(argv: list[str] | None = None) -> int:
    """Train each of ``--runs`` on 2 gloo ranks with the trace callback; each rank writes its traces."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--runs", default="lightning:0", help="flavour:seed,... (flavour: lightning or pytorch_lightning)")
    p.add_argument("--max-steps", type=int, default=STEPS_PER_EPOCH)
    p.add_argument("--commit-interval", type=int, default=2)
    a = p.parse_args(argv)
    if a.max_steps > STEPS_PER_EPOCH:
        p.error(f"--max-steps {a.max_steps} crosses an epoch ({STEPS_PER_EPOCH} steps); see the docstring")
    runs = [(f, int(s)) for f, _, s in (r.partition(":") for r in a.runs.split(","))]
    if any(f not in ("lightning", "pytorch_lightning") for f, _ in runs):
        p.error(f"--runs {a.runs!r}: a flavour is lightning or pytorch_lightning")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    for flavour, seed in runs:
        fit(flavour, seed, a.max_steps, a.commit_interval, Path(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
