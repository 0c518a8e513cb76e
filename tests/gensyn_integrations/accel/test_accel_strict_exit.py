"""Strict mode ends with the step: a loop whose own loss code raises leaves no dispatch mode on.

The executor-role ``Accelerator`` enters strict mode at a training forward and
leaves it at the optimizer step. A loss that raises between the two reaches no
accelerator hook; the mode must still be off by the time the caller handles the
exception, whichever way the loop is written, or every later torch op of the
process runs under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack
from torch.utils.data import DataLoader, TensorDataset


class LossError(Exception):
    """What the user's loss code raises."""


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    raise LossError("the loss code failed")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """accelerate keeps process-wide singletons; each test starts from none."""
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.setenv("GENSYN_REE__THREADS", "1")
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def prepared() -> Iterator[tuple[Any, Any, Any, Any]]:
    from plugins._accel.accelerator import Accelerator

    acc = Accelerator(mode="strict", seed=7, commit_interval=1, gradient_accumulation_steps=2)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = TensorDataset(torch.randn(16, 4, generator=g), torch.zeros(16, dtype=torch.long))
    model, opt, loader = acc.prepare(model, opt, DataLoader(data, batch_size=4))
    try:
        yield acc, model, opt, loader
    finally:
        acc.end_training()  # leaves strict mode whatever the test found


def _for_loop(acc: Any, model: Any, opt: Any, loader: Any) -> None:
    for x, y in loader:
        _loss(model(x), y)


def _accumulate(acc: Any, model: Any, opt: Any, loader: Any) -> None:
    for x, y in loader:
        with acc.accumulate(model):
            _loss(model(x), y)


def _own_iterator(acc: Any, model: Any, opt: Any, loader: Any) -> None:
    it = iter(loader)  # alive in the traceback's frame while the caller handles it
    x, y = next(it)
    with acc.accumulate(model):
        _loss(model(x), y)


def _second_micro_batch(acc: Any, model: Any, opt: Any, loader: Any) -> None:
    for i, (x, y) in enumerate(loader):
        with acc.accumulate(model):
            out = model(x)
            loss = _loss(out, y) if i == 1 else nn.functional.cross_entropy(out, y)
            acc.backward(loss)
            opt.step()
            opt.zero_grad()


def _caught_then_break(acc: Any, model: Any, opt: Any, loader: Any) -> None:
    for x, y in loader:
        try:
            _loss(model(x), y)
        except LossError:
            break
    raise LossError("after the loop")


LOOPS = [_for_loop, _accumulate, _own_iterator, _second_micro_batch, _caught_then_break]


@pytest.mark.parametrize("loop", LOOPS, ids=lambda f: f.__name__.strip("_"))
def test_a_loss_that_raises_after_the_forward_leaves_strict_mode(
    prepared: tuple[Any, Any, Any, Any], loop: Callable[..., None]
) -> None:
    with pytest.raises(LossError):
        loop(*prepared)
    assert _get_current_dispatch_mode_stack() == []  # while the caller handles the exception
    acc, model, opt, loader = prepared
    # and the run goes on: a whole step, then its root
    before = acc.gensyn_step
    for x, y in loader:
        with acc.accumulate(model):
            acc.backward(nn.functional.cross_entropy(model(x), y))
            opt.step()
            opt.zero_grad()
        if acc.gensyn_step > before:
            break
    assert _get_current_dispatch_mode_stack() == []
    assert len(acc.trace.roots) == acc.gensyn_step + 1
