"""A task's code, shipped in its bundle: a tiny MLP regression with Adam and a step LR schedule.

``bad_index`` names a sample whose loading raises, so the user's code fails
deterministically at the first step that draws it.
"""

from typing import Any

import torch


class Data:
    """n samples of y = sum(x)."""

    def __init__(self, n: int, dim: int, bad: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x.sum(1, keepdim=True)
        self.bad = bad

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i == self.bad:
            raise ValueError(f"sample {i} is corrupt")
        return self.x[i], self.y[i]


def build(n: int = 64, dim: int = 4, lr: float = 0.05, bad_index: int = -1) -> dict[str, Any]:
    """The job: model, optimizer, scheduler, loss and data."""
    model = torch.nn.Sequential(torch.nn.Linear(dim, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)

    def loss(m: torch.nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return ((m(b[0]) - b[1]) ** 2).mean()

    return {
        "model": model,
        "optimizer": opt,
        "scheduler": sched,
        "loss": loss,
        "dataset": Data(n, dim, bad_index),
    }
