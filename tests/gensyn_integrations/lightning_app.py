"""A small Lightning job for the trace tests: Adam, dropout, a shuffled DataLoader, StepLR.

Run as a script to train (or resume) in a fresh process and print the trace as JSON:
``python -m tests.gensyn_integrations.lightning_app --max-steps 10 [--resume CKPT]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset


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


def make_data(n: int = 64, *, poke: bool = False) -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=g)
    y = (x.sum(dim=1, keepdim=True) > 0).float()
    if poke:
        x[17, 3] += 1e-3  # one changed element
    return TensorDataset(x, y)


def make_module(flavour: str = "lightning", *, manual: bool = False, scheduler: bool = True) -> Any:
    pl = _pl(flavour)

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = not manual
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 16),
                torch.nn.ReLU(),
                torch.nn.Dropout(0.3),
                torch.nn.Linear(16, 1),
            )

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)
            if manual:
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
                if scheduler:
                    self.lr_schedulers().step()
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            torch.rand(3)  # validation may draw random numbers: never from the training stream
            self.log("val_loss", torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y))

        def configure_optimizers(self) -> Any:
            opt = torch.optim.Adam(self.parameters(), lr=1e-2)
            if not scheduler:
                return opt
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Net()


def run(
    *,
    max_steps: int = 10,
    seed: int = 0,
    num_workers: int = 0,
    poke: bool = False,
    commit_interval: int = 1,
    accumulate: int = 1,
    checkpoint_dir: str | None = None,
    resume: str | None = None,
    flavour: str = "lightning",
    manual: bool = False,
    val_every: int | None = None,
    strategy: Any = None,
    scheduler: bool = True,
) -> Any:
    """Train and return the callback (its ``trace`` holds the roots)."""
    pl = _pl(flavour)
    cb = _callback_cls(flavour)(
        commit_interval=commit_interval, seed=seed, checkpoint_dir=checkpoint_dir
    )
    loader = DataLoader(
        make_data(poke=poke),
        batch_size=8,
        shuffle=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    val = DataLoader(make_data(16), batch_size=8, num_workers=num_workers) if val_every else None
    extra: dict[str, Any] = {"strategy": strategy} if strategy is not None else {}
    trainer = pl.Trainer(
        max_steps=max_steps,
        val_check_interval=val_every,
        check_val_every_n_epoch=None if val_every else 1,
        num_sanity_val_steps=2 if val_every else 0,
        **extra,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accumulate_grad_batches=accumulate,
        callbacks=[] if strategy is not None else [cb],
    )
    trainer.fit(make_module(flavour, manual=manual, scheduler=scheduler), train_dataloaders=loader, val_dataloaders=val,
                ckpt_path=resume)
    return trainer.strategy.trace_callback if strategy is not None else cb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--resume")
    p.add_argument("--checkpoint-dir")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--flavour", default="lightning")
    a = p.parse_args(argv)
    cb = run(
        max_steps=a.max_steps,
        resume=a.resume,
        checkpoint_dir=a.checkpoint_dir,
        num_workers=a.num_workers,
        flavour=a.flavour,
    )
    json.dump(cb.trace.to_json(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
