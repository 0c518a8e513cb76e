"""The integrations in strict mode beyond one clean run: validation, failures, resumes, executors.

Lightning: validation runs outside strict mode and leaves the roots alone; a
failing step leaves no dispatch mode pushed; the executor plugin runs a
``ree_mode="strict"`` task in segments whose roots equal a local strict run's
(the resumed segment restores the strict generator from its checkpoint).
Hugging Face: a run resumed from a checkpoint folder continues the strict
trace; ``release()`` leaves the mode after a failed step. Accelerate: the
recipe in strict mode with gradient accumulation, and saved and resumed
through ``save_state``/``load_state``; a failing forward leaves no mode pushed.
Leaf modules note whether each training forward ran under strict mode.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

import ree
from ree.strict import current_mode
from tests.ree.strict import strict_lightning_app as app
from tests.ree.strict.test_integrations_strict import _data, _Dicts, _HFNet, _Net

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch"),
]

ROOT = Path(__file__).resolve().parents[3]
QUIET: dict[str, Any] = {
    "accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
    "enable_checkpointing": False, "enable_model_summary": False,
}  # fmt: skip


def _no_mode_pushed() -> bool:
    return current_mode() is None and _get_current_dispatch_mode() is None


@pytest.fixture
def leaf_forwards() -> Iterator[list[bool]]:
    """For each training forward of a leaf module (Linear, Dropout...): did it run strict?"""
    seen: list[bool] = []

    def note(module: nn.Module, args: Any) -> None:
        if module.training and torch.is_grad_enabled() and not any(module.children()):
            seen.append(current_mode() is not None)

    handle = nn.modules.module.register_module_forward_pre_hook(note)
    yield seen
    handle.remove()
    assert _no_mode_pushed()


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# -- Lightning --------------------------------------------------------------------------------


def _lightning_fit(steps: int, **trainer_kw: Any) -> tuple[list[str], app.DropoutNet]:
    import lightning.pytorch as pl

    from gensyn_integrations.lightning import GensynStrategy

    strategy = GensynStrategy(role="executor", commit_interval=1, mode="strict", seed=3)
    module = app.DropoutNet()
    pl.Trainer(strategy=strategy, max_steps=steps, **{**QUIET, **trainer_kw}).fit(
        module, app.DropoutData()
    )
    return strategy.trace.roots, module


def test_lightning_validation_runs_outside_strict_mode_and_leaves_the_roots_alone(
    leaf_forwards: list[bool],
) -> None:
    plain, _ = _lightning_fit(4, limit_val_batches=0)
    validated, module = _lightning_fit(4, val_check_interval=2, num_sanity_val_steps=1)
    assert module.validation_batches >= 2 + 2  # the sanity check, then at step 2 (and 4)
    assert len(leaf_forwards) == 2 * 4 * 4  # 2 runs, 4 steps, 4 leaf modules
    assert all(leaf_forwards)
    assert validated == plain
    assert len(set(plain)) == len(plain) == 5


def test_lightning_a_failing_step_leaves_no_strict_mode_pushed() -> None:
    import lightning.pytorch as pl

    from gensyn_integrations.lightning import GensynStrategy
    from ree._determinism import restore_determinism, snapshot_determinism

    strategy = GensynStrategy(role="executor", commit_interval=1, mode="strict", seed=3)
    trainer = pl.Trainer(strategy=strategy, max_steps=4, limit_val_batches=0, **QUIET)
    before = snapshot_determinism()
    try:
        with pytest.raises(ValueError, match="boom at step 2"):
            trainer.fit(app.DropoutNet(fail_at=2), app.DropoutData())
        assert _no_mode_pushed()
        assert strategy.trace.steps == [0, 1]
        # Lightning calls no callback teardown after a failure: on_exception undoes the REE
        after = snapshot_determinism()
        assert after.deterministic_algorithms == before.deterministic_algorithms
        assert after.num_threads == before.num_threads
    finally:
        restore_determinism(before)


def test_the_lightning_executor_runs_a_strict_task_in_segments_with_the_local_roots(
    tmp_path: Path,
) -> None:
    import lightning.pytorch as pl

    from coordinator.tasks import RunRequest
    from gensyn_integrations._lightning.client import build_job
    from gensyn_integrations.lightning import GensynStrategy
    from plugins.lightning_executor import run_lightning

    local, _ = _lightning_fit(4, limit_val_batches=0)
    client = GensynStrategy(seed=3, commit_interval=1, mode="strict")
    spec, files = build_job(client, pl.Trainer(max_steps=4, **QUIET), app.DropoutNet(), None,
                            app.DropoutData())  # fmt: skip
    assert spec.ree_mode == "strict"
    bundle = tmp_path / "bundle"
    for name, data in files.items():
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_bytes(data)
    first = run_lightning(RunRequest(spec, bundle, tmp_path / "s1", end_step=2))
    ck = ree.load_checkpoint(first.checkpoints[2])
    seed, counter = ck.tree.leaves["rng/ree"]
    assert seed == 3
    assert counter > 0  # dropout drew from the strict generator
    assert "rng/torch_cpu" not in ck.tree.leaves
    second = run_lightning(RunRequest(spec, bundle, tmp_path / "s2", start_checkpoint=first.checkpoints[2],
                                      start_step=2, end_step=4))  # fmt: skip
    assert first.trace.roots + second.trace.roots[1:] == local
    assert _no_mode_pushed()


# -- Hugging Face -----------------------------------------------------------------------------


def _hf_trainer(out: Path, steps: int, **kw: Any) -> tuple[Any, Any, _HFNet]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import Trainer, TrainingArguments

    from gensyn_integrations.transformers import GensynCallback

    model = _HFNet()
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2,
        logging_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False, **kw,
    )  # fmt: skip
    callback = GensynCallback(role="executor", commit_interval=1, mode="strict", seed=0, threads=1)
    trainer = Trainer(model=model, args=args, train_dataset=_Dicts(), callbacks=[callback])
    return trainer, callback, model


def test_hf_a_resumed_strict_run_continues_the_trace(tmp_path: Path) -> None:
    # 6 steps over an epoch boundary (4 batches per epoch), saved every 3
    trainer, cb, model = _hf_trainer(tmp_path, 6, save_strategy="steps", save_steps=3)
    trainer.train()
    assert all(model.net.strict_forwards)
    roots = cb.trace.roots
    assert len(set(roots)) == len(roots) == 7
    resumed, cb2, model2 = _hf_trainer(tmp_path, 6, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    assert model2.net.strict_forwards
    assert all(model2.net.strict_forwards)
    assert cb2.trace.roots == roots
    assert _no_mode_pushed()


def test_hf_release_after_a_failing_step_leaves_no_strict_mode_pushed(tmp_path: Path) -> None:
    trainer, cb, model = _hf_trainer(tmp_path, 4, save_strategy="no")

    def fail(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("boom")

    model.net.body.forward = fail  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="boom"):
        trainer.train()
    # the Trainer calls no callback after a failure: whoever catches it releases
    assert current_mode() is not None
    cb.release()
    assert _no_mode_pushed()


# -- Accelerate -------------------------------------------------------------------------------


@pytest.fixture
def accel(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The accelerate recipe in strict mode, one root per step; fresh accelerate singletons."""
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.setenv("GENSYN_TASK__COMMIT_INTERVAL", "1")
    monkeypatch.setenv("GENSYN_REE__MODE", "strict")
    spec = importlib.util.spec_from_file_location(
        "accelerate_classifier", ROOT / "recipes" / "accelerate_classifier.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield module
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _accel_roots(recipe: ModuleType, out: Path, *argv: str) -> list[str]:
    from accelerate.state import AcceleratorState, GradientState

    assert recipe.main(["--out", str(out), *argv]) == 0
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    trace = ree.Trace.from_json((out / "trace-rank0.json").read_bytes())
    assert trace.final
    return trace.roots


def test_accelerate_strict_save_state_and_load_state_continue_the_trace(
    accel: ModuleType, tmp_path: Path, leaf_forwards: list[bool]
) -> None:
    # 34 steps cross the epoch boundary (32 batches of 8) with one save after step 33
    roots = _accel_roots(accel, tmp_path / "a", "--max-steps", "34", "--save-at", "33",
                         "--save-dir", str(tmp_path / "saved"))  # fmt: skip
    assert len(set(roots)) == len(roots) == 35
    ck = ree.load_checkpoint(tmp_path / "saved" / "ree-state.safetensors", expected_root=roots[33])
    assert ck.tree.leaves["rng/ree"][1] > 0
    resumed = _accel_roots(accel, tmp_path / "b", "--max-steps", "34", "--resume",
                           str(tmp_path / "saved"))  # fmt: skip
    assert resumed == roots
    assert leaf_forwards
    assert all(leaf_forwards)


def test_accelerate_strict_accumulation_runs_every_micro_batch_strict(
    accel: ModuleType, tmp_path: Path, leaf_forwards: list[bool]
) -> None:
    roots = _accel_roots(accel, tmp_path, "--max-steps", "3", "--grad-accum", "2")
    assert len(roots) == 4
    assert len(leaf_forwards) == 3 * 2 * 4  # 3 steps of 2 micro-batches, 4 leaf modules
    assert all(leaf_forwards)


def test_accelerate_a_failing_forward_leaves_no_strict_mode_pushed(accel: ModuleType) -> None:
    from torch.utils.data import DataLoader

    from gensyn_integrations.accelerate import Accelerator

    accelerator = Accelerator(commit_interval=1, mode="strict", seed=0, threads=1, cpu=True)
    net = _Net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    model, opt, loader = accelerator.prepare(net, opt, DataLoader(_data(), batch_size=8))
    x, y = next(iter(loader))

    def steps_then_fails_inside_an_except_block() -> None:
        try:
            raise KeyError("an exception being handled around the forward")
        except KeyError:
            model(x)  # a forward inside an except block: still strict
            assert current_mode() is not None
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            assert current_mode() is None
            net.body.forward = lambda x: (_ for _ in ()).throw(ValueError("boom"))  # type: ignore[method-assign]
            model(x)

    with pytest.raises(ValueError, match="boom"):
        steps_then_fails_inside_an_except_block()
    assert _no_mode_pushed()
    accelerator.end_training()


def test_hf_strict_accumulation_runs_every_micro_batch_strict(tmp_path: Path) -> None:
    trainer, cb, model = _hf_trainer(tmp_path, 2, save_strategy="no", gradient_accumulation_steps=2)
    trainer.train()
    assert cb.trace.steps == [0, 1, 2]
    assert model.net.strict_forwards == [True] * 4
    assert _no_mode_pushed()


def test_the_accelerate_run_request_carries_the_task_mode(tmp_path: Path) -> None:
    from plugins._accel.run import RUN_ENV, ExecutorRun

    run = ExecutorRun(out_dir=tmp_path, end_step=2, root_every=1, checkpoint_every=1, seed=0,
                      threads=1, mode="strict")  # fmt: skip
    back = ExecutorRun.from_env({RUN_ENV: run.to_env()})
    assert back is not None
    assert back.mode == "strict"
    old = {RUN_ENV: run.to_env().replace(', "mode": "strict"', "")}  # a request from before the mode
    assert (ExecutorRun.from_env(old) or run).mode == "device"


def test_hf_gensyn_trainer_releases_strict_mode_when_a_step_fails(tmp_path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import TrainingArguments

    from gensyn_integrations.transformers import GensynTrainer

    model = _HFNet()
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8, learning_rate=1e-2,
        logging_strategy="no", save_strategy="no", report_to="none", use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
    )  # fmt: skip
    trainer = GensynTrainer(model=model, args=args, train_dataset=_Dicts(), role="executor",
                            commit_interval=1)  # fmt: skip
    trainer.gensyn_callback.mode = "strict"

    def fail(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("boom")

    model.net.body.forward = fail  # type: ignore[method-assign]
    before = torch.are_deterministic_algorithms_enabled()
    with pytest.raises(ValueError, match="boom"):
        trainer.train()
    assert _no_mode_pushed()  # GensynTrainer.train released it on the way out
    assert torch.are_deterministic_algorithms_enabled() == before

