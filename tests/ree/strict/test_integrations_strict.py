"""The integrations in strict mode: mode="strict" must reach strict mode, and roots must agree.

One cheap run per integration, with 1 and with 2 intra-op threads: Lightning's
``GensynStrategy(role="executor", mode="strict")``, Hugging Face's
``GensynCallback(role="executor", mode="strict")`` and gensyn's ``Accelerator``.
Each model records whether its forward ran under :class:`ree.strict.StrictMode`,
so a run that silently fell back to device mode fails here, as does a run whose
roots differ between thread counts.

Each integration holds one ``StrictMode(StrictGenerator(seed))`` per run and
enters it for each step only (Lightning: ``on_train_batch_start`` to
``on_train_batch_end``; HF: ``on_step_begin`` to ``on_step_end``; Accelerate: a
forward pre-hook to the optimizer's step post-hook), leaving it before a root is
taken. Held over the whole loop it would fail: the DataLoader's iterator draws
its base seed with ``random_``, which strict mode refuses. More strict runs
(validation, failures, resumes, the executors): ``test_integrations_strict_runs.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ree.strict import current_mode

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
]

STEPS = 3


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(32, 8, generator=g)
    return TensorDataset(x, (x.sum(1) > 0).long())


class _Net(nn.Module):
    """A tiny classifier that notes whether each forward ran under strict mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 2))
        self.strict_forwards: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.strict_forwards.append(current_mode() is not None)
        return self.body(x)


def _check(runs: dict[int, tuple[list[str], list[bool]]]) -> None:
    for threads, (roots, strict_forwards) in runs.items():
        assert strict_forwards, f"no forward ran with {threads} thread(s)"
        assert all(strict_forwards), f"a forward ran outside strict mode ({threads} thread(s))"
        assert len(roots) == STEPS + 1, roots
    assert runs[1][0] == runs[2][0]


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# -- Lightning --------------------------------------------------------------------------------


def _lightning_run(threads: int) -> tuple[list[str], list[bool]]:
    import lightning.pytorch as pl

    from gensyn_integrations.lightning import GensynStrategy

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _Net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    module = Module()
    strategy = GensynStrategy(
        role="executor", commit_interval=1, mode="strict", seed=0, threads=threads
    )
    trainer = pl.Trainer(
        strategy=strategy,
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(_data(), batch_size=8))
    return strategy.trace.roots, module.net.strict_forwards


@pytest.mark.usefixtures("restore_threads")
def test_lightning_strategy_runs_strict_mode_with_equal_roots_over_threads() -> None:
    _check({t: _lightning_run(t) for t in (1, 2)})


# -- Hugging Face -----------------------------------------------------------------------------


class _HFNet(nn.Module):
    """The tiny classifier with the Trainer's calling convention (a dict in, the loss out)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _Net()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(self.net(x), labels)}


class _Dicts(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        self.data = _data()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.data[i]
        return {"x": x, "labels": y}


def _hf_run(threads: int, out: Path) -> tuple[list[str], list[bool]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import Trainer, TrainingArguments

    from gensyn_integrations.transformers import GensynCallback

    model = _HFNet()
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    callback = GensynCallback(
        role="executor", commit_interval=1, mode="strict", seed=0, threads=threads
    )
    Trainer(model=model, args=args, train_dataset=_Dicts(), callbacks=[callback]).train()
    return callback.trace.roots, model.net.strict_forwards


@pytest.mark.usefixtures("restore_threads")
def test_hf_callback_runs_strict_mode_with_equal_roots_over_threads(tmp_path: Path) -> None:
    _check({t: _hf_run(t, tmp_path / f"t{t}") for t in (1, 2)})


# -- Accelerate -------------------------------------------------------------------------------


@pytest.fixture
def fresh_accelerate() -> Iterator[None]:
    """accelerate keeps process-wide singletons: start and end with none."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _accelerate_run(threads: int) -> tuple[list[str], list[bool]]:
    from accelerate.state import AcceleratorState, GradientState

    from gensyn_integrations.accelerate import Accelerator

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = Accelerator(
        role="executor", commit_interval=1, mode="strict", seed=0, threads=threads, cpu=True
    )
    net = _Net()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    model, optimizer, loader = accelerator.prepare(
        net, optimizer, DataLoader(_data(), batch_size=8, shuffle=True)
    )
    for x, y in loader:
        accelerator.backward(nn.functional.cross_entropy(model(x), y))
        optimizer.step()
        optimizer.zero_grad()
        if accelerator.gensyn_step >= STEPS:
            break
    trace = accelerator.finish_trace()
    accelerator.end_training()
    return trace.roots, net.strict_forwards


@pytest.mark.usefixtures("restore_threads", "fresh_accelerate")
def test_accelerator_runs_strict_mode_with_equal_roots_over_threads() -> None:
    _check({t: _accelerate_run(t) for t in (1, 2)})
