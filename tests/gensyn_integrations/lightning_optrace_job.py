"""The task code of the Lightning op-trace tests: shipped in a bundle, built by the executor.

An MLP with dropout, Adam and StepLR that logs its loss (Lightning's result
collection runs inside the traced step), for either Lightning package.
``untraceable=True`` makes the step read a tensor that is neither state nor
batch, as code holding a plain tensor attribute would; ``fail_at`` makes the
user's code raise at that optimizer step.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset


def _module_cls(flavour: str) -> type:
    pl = importlib.import_module("pytorch_lightning" if flavour == "pytorch_lightning" else "lightning.pytorch")

    class OpNet(pl.LightningModule):  # type: ignore[misc, name-defined]
        """Linear, ReLU, Dropout, Linear; mean squared error; logs ``train_loss``."""

        def __init__(self, untraceable: bool = False, fail_at: int = 0) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1)
            )
            # a plain attribute: not a parameter, not a buffer, so in no state root
            self.hidden_scale = torch.linspace(0.5, 1.5, 100) if untraceable else None
            self.fail_at = fail_at

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.global_step + 1 == self.fail_at:
                raise ValueError(f"the user's code fails at step {self.fail_at}")
            x, y = batch
            if self.hidden_scale is not None:
                x = x * self.hidden_scale[:8]
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            opt = torch.optim.Adam(self.parameters(), lr=1e-2)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return OpNet


def build(untraceable: bool = False, fail_at: int = 0, flavour: str = "lightning") -> dict[str, Any]:
    """The job: the module and a shuffled loader of 32 samples in batches of 4."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(32, 8, generator=g)
    y = (x.sum(dim=1, keepdim=True) > 0).float()
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    return {"module": _module_cls(flavour)(untraceable, fail_at), "train_dataloader": loader}
