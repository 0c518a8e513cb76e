"""GensynCallback and GensynTrainer with the real Hugging Face Trainer and a tiny GPT-2.

Equal roots run to run and between ``Trainer + GensynCallback`` and
``GensynTrainer``; accumulation counts real optimizer steps; a resume in a new
process, from the REE checkpoint alone (the Trainer's pickles deleted), continues
the trace with the roots of the uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import ree
from gensyn_integrations.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "hf_tiny_gpt2.py"
PICKLES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")


def _recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hf_tiny_gpt2", RECIPE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    return _recipe()


def _train(recipe: ModuleType, out: Path, **kw: Any) -> Any:
    trainer, cb = recipe.build(str(out), **kw)
    trainer.train()
    return cb


@pytest.fixture(scope="module")
def baseline(
    recipe: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], Path]:
    """8 steps (over an epoch boundary), saved at step 4, with GensynTrainer."""
    out = tmp_path_factory.mktemp("hf-baseline")
    cb = _train(recipe, out, max_steps=8, save_steps=4)
    assert cb.trace.steps == list(range(9))
    assert cb.trace.final
    return cb.trace.roots, out


def test_two_runs_give_identical_roots_with_plain_trainer_too(
    recipe: ModuleType, baseline: tuple[list[str], Path], tmp_path: Path
) -> None:
    roots, _ = baseline
    assert len(set(roots)) == len(roots)  # every step changed the state
    # Trainer + GensynCallback: the sampler is swapped in place, to the same order
    cb = _train(recipe, tmp_path, max_steps=8, save_steps=4, plain_trainer=True)
    assert cb.trace.roots == roots
    assert cb.cursor["epoch"] == 1  # 6 batches per epoch: step 8 is in the second one


def test_changed_seed_changes_every_root(
    recipe: ModuleType, baseline: tuple[list[str], Path], tmp_path: Path
) -> None:
    cb = _train(recipe, tmp_path, max_steps=2, seed=1)
    assert all(r not in baseline[0] for r in cb.trace.roots)


def test_accumulation_counts_real_optimizer_steps(recipe: ModuleType, tmp_path: Path) -> None:
    cb = _train(recipe, tmp_path, max_steps=3, grad_accum=2, commit_interval=2)
    assert cb.step == 3  # 6 micro-batches, 3 optimizer steps
    assert cb.trace.steps == [0, 2, 3]
    assert cb.trace.final
    assert cb.cursor == {"epoch": 1, "index": 0, "seed": 0}  # 6 batches: one whole epoch


def test_save_writes_an_ree_checkpoint_and_the_trace_state(
    baseline: tuple[list[str], Path],
) -> None:
    roots, out = baseline
    folder = out / "checkpoint-4"
    ck = ree.load_checkpoint(folder / "ree-state.safetensors", expected_root=roots[4])
    assert ck.tree.leaves["ree/step"] == 4
    assert ck.tree.leaves["data/index"] == 16  # 4 steps of 4 samples
    assert ree.Trace.from_json(ck.extra["trace"]).roots == roots[:5]
    state = json.loads((folder / "trainer_state.json").read_text())
    saved = state["stateful_callbacks"]["GensynCallback"]["attributes"]["_gensyn_saved"]
    assert saved["root"] == roots[4]
    assert saved["trace"]["roots"] == roots[:5]


def test_resume_in_a_new_process_from_the_ree_checkpoint_alone(
    baseline: tuple[list[str], Path], tmp_path: Path
) -> None:
    roots, out = baseline
    folder = tmp_path / "checkpoint-4"
    shutil.copytree(out / "checkpoint-4", folder)
    for name in PICKLES:  # only REE checkpoints cross machines: resume without the pickles
        (folder / name).unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [
            sys.executable,
            str(RECIPE),
            "--max-steps",
            "8",
            "--resume",
            str(folder),
            "--output-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    resumed = ree.Trace.from_json(run.stdout.strip().splitlines()[-1])
    assert resumed.roots == roots
    assert resumed.steps == list(range(9))


def test_a_tampered_ree_checkpoint_refuses_to_resume(
    recipe: ModuleType, baseline: tuple[list[str], Path], tmp_path: Path
) -> None:
    _, out = baseline
    folder = tmp_path / "checkpoint-4"
    shutil.copytree(out / "checkpoint-4", folder)
    ck = ree.load_checkpoint(folder / "ree-state.safetensors")
    other = dict(ck.tree.leaves)
    other["data/index"] = 12
    ree.save_checkpoint(folder / "ree-state.safetensors", ree.StateTree(other), extra=ck.extra)
    trainer, _ = recipe.build(str(tmp_path), max_steps=8, save_steps=4)
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    with pytest.raises(ree.RootMismatchError):
        trainer.train(resume_from_checkpoint=str(folder))
    # the failed start undid the REE's process-wide settings
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


@pytest.mark.parametrize("role", ["solver", None, "Client"])
def test_a_role_that_is_not_one_is_a_clear_error(role: object) -> None:
    import gensyn_integrations.transformers as hf

    with pytest.raises(ConfigError, match=r"role"):
        hf.GensynCallback(role=role)  # type: ignore[arg-type]


def test_importing_the_transformers_integration_does_not_import_lightning() -> None:
    code = (
        "import sys, gensyn_integrations.transformers as t, gensyn_integrations.accelerate as a\n"
        "from gensyn_integrations import GensynCallback\n"
        "assert GensynCallback is t.GensynCallback\n"
        "bad = [m for m in ('lightning', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
