"""The task code of ``recipes/torch_regression.py``: it travels in the task bundle.

A plain-PyTorch job for the torch executor: ``build()`` returns the model,
optimizer, scheduler, loss and dataset; the executor owns the loop, the data
order and the REE.
"""

from typing import Any

import torch


class Waves(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """n samples of a noisy sine, generated from a fixed seed."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.rand(n, 1, generator=g) * 6.0 - 3.0
        self.y = torch.sin(self.x) + 0.05 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def build(n: int = 256, hidden: int = 32, lr: float = 0.03) -> dict[str, Any]:
    """The job."""
    model = torch.nn.Sequential(
        torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=0.7)

    def loss(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(m(x), y)

    return {"model": model, "optimizer": opt, "scheduler": sched, "loss": loss, "dataset": Waves(n)}
