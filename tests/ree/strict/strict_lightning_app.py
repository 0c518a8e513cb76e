"""A small LightningModule with dropout, logging and validation, for strict-mode runs (self-contained:
the Lightning client role ships this file to the executor)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class DropoutNet(pl.LightningModule):
    """A classifier with dropout (so strict mode's generator advances), AdamW and a step schedule.

    ``fail_at``: the training step raises ``ValueError`` at that optimizer step (0: never).
    """

    def __init__(self, fail_at: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2)
        )
        self.validation_batches = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step + 1 == self.hparams["fail_at"]:
            raise ValueError(f"boom at step {self.hparams['fail_at']}")
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.validation_batches += 1
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DropoutData(pl.LightningDataModule):
    """64 seeded samples of a sign problem in batches of 8 (shuffled for training), and 16 to validate."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(80, 8, generator=g)
        y = (x.sum(dim=1) > 0).long()
        self.train_ds = TensorDataset(x[:64], y[:64])
        self.val_ds = TensorDataset(x[64:], y[64:])

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train_ds, batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_ds, batch_size=8)
