"""Classify 8x8 handwritten digits with Lightning, trained by a solver on the gensyn network.

The only gensyn line is the strategy: ``Trainer(strategy=GensynStrategy())``.
With no network configured, ``fit`` starts the embedded devnet for the call
(anvil with the contracts, a local store, one solver), ships this file (it
defines the LightningModule and the LightningDataModule) with the model's
initial weights, posts the task, waits until it is verified and paid, and loads
the final REE checkpoint, checked against the root committed on chain, into the
model. ``test`` then runs here, on the returned weights.

The data is scikit-learn's ``load_digits`` (1797 images, shipped inside the
package: nothing is downloaded), split with a fixed seed so the solver builds
the same datamodule.

Run: ``python recipes/lightning_mnist.py [--steps 120]``, or ``--local`` to train
here under the REE (``GensynStrategy(role="executor")``) and print the trace.
The training itself takes a few seconds; a devnet ``fit`` takes one to two
minutes on a busy 2-core machine, nearly all of it the network's fixed cost
(starting the chain and a solver, the solver's segments in fresh processes,
one-second blocks).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

E18 = 10**18


def load_split(test_fraction: float, split_seed: int) -> tuple[TensorDataset, TensorDataset]:
    """The digits as (train, test) datasets of flat 64-pixel images in [0, 1], split by ``split_seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_test = round(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


class DigitsData(pl.LightningDataModule):
    """scikit-learn's 8x8 digits: a seeded train/test split, shuffled training batches."""

    def __init__(self, batch_size: int = 32, test_fraction: float = 0.2, split_seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()  # the solver rebuilds this datamodule from these
        self.train_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def setup(self, stage: str) -> None:
        """Load and split the digits once (the same split on every machine)."""
        if self.train_set is None:
            self.train_set, self.test_set = load_split(
                self.hparams["test_fraction"], self.hparams["split_seed"]
            )

    def train_dataloader(self) -> DataLoader[Any]:
        assert self.train_set is not None
        return DataLoader(self.train_set, batch_size=self.hparams["batch_size"], shuffle=True)

    def test_dataloader(self) -> DataLoader[Any]:
        assert self.test_set is not None
        return DataLoader(self.test_set, batch_size=len(self.test_set))  # one batch: exact accuracy


class DigitsMLP(pl.LightningModule):
    """A two-layer perceptron with dropout, trained with AdamW and a step LR schedule."""

    def __init__(self, hidden: int = 128, lr: float = 3e-3, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_acc", (self(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


QUIET: dict[str, Any] = {
    "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
    "enable_model_summary": False, "enable_progress_bar": False,
}  # fmt: skip


def trainer(role: str = "client", *, steps: int = 120, seed: int = 0, commit_interval: int = 10) -> pl.Trainer:
    """A Trainer whose strategy trains on the network (``client``) or here under the REE (``executor``)."""
    from gensyn_integrations.lightning import GensynStrategy

    strategy = GensynStrategy(role=role, seed=seed, commit_interval=commit_interval)
    return pl.Trainer(strategy=strategy, max_steps=steps, **QUIET)


def accuracy(model: pl.LightningModule, data: DigitsData, t: pl.Trainer | None = None) -> float:
    """Test accuracy of ``model``, evaluated here (by ``t`` if given, else a plain Trainer)."""
    return float((t or pl.Trainer(**QUIET)).test(model, datamodule=data, verbose=False)[0]["test_acc"])


def main(argv: Sequence[str] | None = None) -> int:
    """Train the digits classifier on the devnet (or ``--local``ly) and print what it bought."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps (default %(default)s)")
    ap.add_argument("--batch-size", type=int, default=32, help="default %(default)s")
    ap.add_argument("--hidden", type=int, default=128, help="hidden units (default %(default)s)")
    ap.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default %(default)s)")
    ap.add_argument("--commit-interval", type=int, default=10,
                    help="optimizer steps between committed state roots (default %(default)s)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="initial weights and REE seed (default %(default)s)")
    ap.add_argument("--local", action="store_true",
                    help="train here under the REE (role='executor') instead of on the network")  # fmt: skip
    ap.add_argument("--save", metavar="PATH", help="write the trained weights there (safetensors)")
    a = ap.parse_args(argv)
    _quiet()

    torch.manual_seed(a.seed)  # the initial weights; they travel with the task
    model, data = DigitsMLP(hidden=a.hidden, lr=a.lr), DigitsData(batch_size=a.batch_size)
    before = accuracy(model, data)
    assert data.train_set is not None
    assert data.test_set is not None
    print(f"digits: {len(data.train_set)} training and {len(data.test_set)} test images, 8x8, 10 classes")
    print(f"test accuracy before training: {before:.1%}")
    role = "executor" if a.local else "client"
    t = trainer(role, steps=a.steps, seed=a.seed, commit_interval=a.commit_interval)
    where = "here under the REE" if a.local else "on the embedded devnet"
    print(f"training {type(model).__name__} for {a.steps} steps {where} ...", flush=True)
    start = time.monotonic()
    t.fit(model, datamodule=data)
    print(f"fit took {time.monotonic() - start:.1f} s")
    if a.local:
        trace = t.strategy.trace  # type: ignore[attr-defined]
        print(f"trace: {len(trace.roots)} state roots, one every {a.commit_interval} steps; "
              f"final state root {trace.roots[-1]}; trace root {trace.root}")  # fmt: skip
    else:
        _print_receipt(t.strategy.receipt)  # type: ignore[attr-defined]
    after = accuracy(model, data, t)  # runs here, on the weights the solver returned
    print(f"test accuracy after training: {after:.1%} (was {before:.1%})")
    if a.save:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a.save)
        print(f"weights saved to {a.save}")
    return 0


def _quiet() -> None:
    """Keep the recipe's output to its own lines: Lightning's info chatter and tips go."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")


def _print_receipt(r: Any) -> None:
    print(f"task id: {r.task_id} ({len(r.transactions)} transactions; spec {r.spec_cid})")
    print(f"solvers: {', '.join(r.solvers)}")
    state = "verified" if r.verified and r.outcome == "verified" else f"NOT verified ({r.outcome})"
    print(f"verification: {state}; final root {r.final_root} (the downloaded weights hash to it)")
    paid = r.cost - r.fee_burned
    print(f"tokens: paid {paid / E18:.4f} AI to {len(r.solvers)} solver(s), burned {r.fee_burned / E18:.4f} AI "
          f"(cost {r.cost / E18:.4f} AI)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
