"""A small LightningModule and DataModule whose source the client role ships (self-contained on purpose)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class TinyNet(pl.LightningModule):
    """A two-layer regressor trained with Adam and a step LR schedule."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, width), torch.nn.Tanh(), torch.nn.Linear(width, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_mse", loss * 1.0, on_step=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class TinyData(pl.LightningDataModule):
    """64 seeded samples of y = sum(x), shuffled in batches of 8."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(64, 4, generator=g)
        self.ds = TensorDataset(x, x.sum(dim=1, keepdim=True))

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.ds, batch_size=8, shuffle=True)


class FailingNet(TinyNet):
    """TinyNet whose training step raises at optimizer step ``fail_at`` (a deterministic user bug)."""

    def __init__(self, fail_at: int = 3, width: int = 16) -> None:
        super().__init__(width)
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step + 1 == self.hparams["fail_at"]:
            raise ValueError(f"boom at step {self.hparams['fail_at']}")
        return super().training_step(batch, batch_idx)
