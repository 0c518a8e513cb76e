"""The Lightning digits recipes: they learn under the REE, repeat bit for bit, and run on the devnet."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from recipes import lightning_cnn, lightning_mnist

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:FutureWarning"),
]

STEPS, INTERVAL = 30, 10


def _model(recipe: ModuleType) -> Any:
    torch.manual_seed(0)
    return recipe.DigitsMLP() if recipe is lightning_mnist else recipe.DigitsCNN()


def _train_loss(model: Any, data: Any) -> float:
    x, y = data.train_set.tensors
    model.eval()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


def _executor_run(recipe: ModuleType, seed: int = 0) -> tuple[Any, Any, Any]:
    model, data = _model(recipe), recipe.DigitsData()
    trainer = recipe.trainer("executor", steps=STEPS, seed=seed, commit_interval=INTERVAL)
    trainer.fit(model, datamodule=data)
    return model, data, trainer


@pytest.fixture(autouse=True)
def _lightning_logs_back() -> Iterator[None]:
    """A recipe's ``main`` quiets Lightning's logger; give other tests their level back."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    yield
    log.setLevel(level)


@pytest.mark.parametrize("recipe", [lightning_mnist, lightning_cnn], ids=["mlp", "cnn"])
def test_recipe_learns_under_the_ree_and_repeats_bit_for_bit(recipe: ModuleType) -> None:
    untrained, data = _model(recipe), recipe.DigitsData()
    before = recipe.accuracy(untrained, data)
    loss_before = _train_loss(untrained, data)

    model, data, trainer = _executor_run(recipe)
    trace = trainer.strategy.trace
    assert trace.steps == list(range(0, STEPS + 1, INTERVAL))
    assert len(set(trace.roots)) == len(trace.roots)  # every interval changed the state
    assert trace.final
    assert _train_loss(model, data) < 0.8 * loss_before
    after = recipe.accuracy(model, data, trainer)  # test runs here with the same Trainer
    assert after > 0.5 > before + 0.2  # chance is 0.1

    again, _, trainer2 = _executor_run(recipe)
    assert trainer2.strategy.trace.roots == trace.roots
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert _executor_run(recipe, seed=1)[2].strategy.trace.roots[1:] != trace.roots[1:]


def test_the_datamodule_splits_the_same_way_every_time() -> None:
    a, b = lightning_mnist.DigitsData(), lightning_cnn.DigitsData()
    a.setup("fit")
    b.setup("fit")
    xa, ya = a.train_set.tensors  # type: ignore[union-attr]
    xb, yb = b.train_set.tensors  # type: ignore[union-attr]
    assert torch.equal(ya, yb)
    assert torch.equal(xa.flatten(1), xb.flatten(1))
    assert xb.shape[1:] == (1, 8, 8)
    assert len(ya) + len(a.test_set) == 1797  # type: ignore[arg-type]
    other = lightning_mnist.DigitsData(split_seed=1)
    other.setup("fit")
    assert not torch.equal(other.train_set.tensors[1], ya)  # type: ignore[union-attr]


def test_local_flag_trains_here_and_prints_the_trace(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    assert lightning_mnist.main(["--local", "--steps", "20", "--save", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 state roots, one every 10 steps" in text
    assert re.search(r"test accuracy after training: \d+\.\d% \(was \d+\.\d%\)", text)
    assert out.stat().st_size > 0


@pytest.mark.slow
def test_mnist_recipe_on_the_devnet_returns_verified_weights_equal_to_a_local_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "remote.safetensors"
    assert lightning_mnist.main(["--steps", str(STEPS), "--save", str(out)]) == 0
    text = capsys.readouterr().out
    root = re.search(r"verification: verified; final root ([0-9a-f]{64})", text)
    assert root, text
    assert re.search(r"task id: \d+ \(\d+ transactions", text), text
    assert re.search(r"solvers: 0x[0-9a-fA-F]{40}", text), text
    paid = re.search(r"tokens: paid (\d+\.\d+) AI to 1 solver\(s\), burned (\d+\.\d+) AI", text)
    assert paid, text
    assert float(paid[1]) > float(paid[2]) > 0

    local, _, trainer = _executor_run(lightning_mnist)  # the recipe's defaults: seed 0
    assert root[1] == trainer.strategy.trace.roots[-1]
    remote = load_file(str(out))
    want = local.state_dict()
    assert remote.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(v, remote[k]), k
