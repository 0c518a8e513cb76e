"""gensyn's Accelerator and ``gensyn launch`` with the real accelerate.

Equal roots run to run; accumulation counts real steps; ``save_state`` carries
the trace and a resume in a new process continues it; 2 CPU ranks started by
``gensyn launch`` record identical roots; ``accelerate launch --config_file``
with a plain accelerate config runs the executor role too; a bad gensyn.yaml
or a missing script is one clear error, before anything starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import ree
from gensyn_integrations.cli import main

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "accelerate_classifier.py"
CONFIG = ROOT / "recipes" / "gensyn.yaml"


@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("accelerate_classifier", RECIPE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _fresh_accelerate_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """accelerate keeps process-wide singletons; each test starts from none."""
    monkeypatch.setenv("GENSYN_TASK__COMMIT_INTERVAL", "1")
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _trace(out: Path, rank: int = 0) -> ree.Trace:
    return ree.Trace.from_json((out / f"trace-rank{rank}.json").read_bytes())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSYN_")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def baseline(
    recipe: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], Path]:
    """40 steps (over an epoch boundary: 32 batches per epoch), state saved after step 35."""
    out = tmp_path_factory.mktemp("accel-baseline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENSYN_TASK__COMMIT_INTERVAL", "1")
        assert (
            recipe.main(
                [
                    "--out",
                    str(out),
                    "--max-steps",
                    "40",
                    "--save-at",
                    "35",
                    "--save-dir",
                    str(out / "saved"),
                ]
            )
            == 0
        )
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    trace = _trace(out)
    assert trace.steps == list(range(41))
    assert trace.final
    return trace.roots, out


def test_two_runs_give_identical_roots(
    recipe: ModuleType, baseline: tuple[list[str], Path], tmp_path: Path
) -> None:
    roots, _ = baseline
    assert len(set(roots)) == len(roots)
    assert recipe.main(["--out", str(tmp_path), "--max-steps", "40"]) == 0
    assert _trace(tmp_path).roots == roots


def test_accumulation_counts_real_optimizer_steps(
    recipe: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENSYN_TASK__COMMIT_INTERVAL", "2")
    assert recipe.main(["--out", str(tmp_path), "--max-steps", "5", "--grad-accum", "2"]) == 0
    assert _trace(tmp_path).steps == [0, 2, 4, 5]


def test_save_state_carries_the_trace(baseline: tuple[list[str], Path]) -> None:
    roots, out = baseline
    ck = ree.load_checkpoint(out / "saved" / "ree-state.safetensors", expected_root=roots[35])
    assert ree.Trace.from_json(ck.extra["trace"]).roots == roots[:36]
    assert ck.extra["cursor"] == {"epoch": 1, "index": 24, "seed": 0}  # 35 = 32 + 3 batches of 8


def test_resume_in_a_new_process_continues_the_trace(
    baseline: tuple[list[str], Path], tmp_path: Path
) -> None:
    roots, out = baseline
    env = {**_env(), "GENSYN_TASK__COMMIT_INTERVAL": "1"}
    run = subprocess.run(
        [
            sys.executable,
            str(RECIPE),
            "--out",
            str(tmp_path),
            "--max-steps",
            "40",
            "--resume",
            str(out / "saved"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert _trace(tmp_path).roots == roots


def test_load_ree_checkpoint_alone_resumes_without_pickles(
    recipe: ModuleType, baseline: tuple[list[str], Path], tmp_path: Path
) -> None:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from gensyn_integrations.accelerate import Accelerator

    roots, out = baseline
    acc = Accelerator(commit_interval=1, seed=0, mode="device", threads=1)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    loader = DataLoader(recipe.dataset(), batch_size=8, shuffle=True)
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
    acc.load_ree_checkpoint(out / "saved" / "ree-state.safetensors")
    assert acc.trace.roots == roots[:36]
    for x, y in loader:  # one more step: the root of step 36 of the uninterrupted run
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        break
    assert acc.trace.roots == roots[:37]
    acc.end_training()


def test_two_cpu_ranks_via_gensyn_launch_record_identical_roots(tmp_path: Path) -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["accelerate"]["main_process_port"] = _free_port()
    (tmp_path / "gensyn.yaml").write_text(yaml.safe_dump(cfg))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "gensyn_integrations",
            "launch",
            "--config",
            "gensyn.yaml",
            str(RECIPE),
            "--out",
            str(tmp_path / "out"),
            "--max-steps",
            "6",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rank0, rank1 = _trace(tmp_path / "out", 0), _trace(tmp_path / "out", 1)
    assert rank0.steps == [0, 2, 4, 6]  # commit_interval 2 reached the ranks from gensyn.yaml
    assert rank0.roots == rank1.roots
    assert rank0.root == rank1.root


def test_plain_accelerate_launch_with_config_file_runs_the_executor(tmp_path: Path) -> None:
    (tmp_path / "acc.yaml").write_text(
        yaml.safe_dump(
            {
                "compute_environment": "LOCAL_MACHINE",
                "distributed_type": "NO",
                "num_processes": 1,
                "use_cpu": True,
                "mixed_precision": "no",
            }
        )
    )
    env = {**_env(), "GENSYN_TASK__COMMIT_INTERVAL": "3"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "acc.yaml",
            str(RECIPE),
            "--out",
            str(tmp_path / "out"),
            "--max-steps",
            "6",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert _trace(tmp_path / "out").steps == [0, 3, 6]


# -- a bad gensyn.yaml: one clear error, no traceback, nothing started ---------------------

BAD = {
    "unknown key in task": ({"task": {"comit_interval": 2}}, "task.commit_interval"),
    "unknown key in ree": ({"ree": {"sead": 1}}, "ree.seed"),
    "unknown section": ({"acelerate": {"num_processes": 2}}, "accelerate"),
    "unknown key in accelerate": (
        {"accelerate": {"distributed_type": "NO", "num_proceses": 2}},
        "accelerate.num_processes",
    ),
    "accelerate without distributed_type": (
        {"accelerate": {"num_processes": 2}},
        "distributed_type",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_gensyn_yaml_is_one_clear_error(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, expected = BAD[name]
    (tmp_path / "gensyn.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    assert main(["launch", "--config", "gensyn.yaml", "train.py"]) == 2
    err = capsys.readouterr().err
    assert "gensyn: error:" in err
    assert expected in err
    assert "gensyn.yaml" in err
    assert "Traceback" not in err


def test_missing_script_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gensyn.yaml").write_text(CONFIG.read_text())
    assert main(["launch", "--config", "gensyn.yaml", "nope.py", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "'nope.py' does not exist" in err
    assert "Traceback" not in err


def test_dry_run_shows_the_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENSYN_TASK__COMMIT_INTERVAL")  # the file's value, not the fixture's
    (tmp_path / "gensyn.yaml").write_text(CONFIG.read_text())
    (tmp_path / "train.py").write_text("")
    assert main(["launch", "--config", "gensyn.yaml", "--dry-run", "train.py", "--lr", "1"]) == 0
    out = capsys.readouterr().out
    assert "GENSYN_TASK__COMMIT_INTERVAL=2" in out
    assert "ACCELERATE_USE_CPU=true" in out
    assert "--config_file" in out
    assert out.rstrip().endswith("train.py --lr 1")
    assert json.loads(out.split("GENSYN_REE__MODE=")[1].splitlines()[0]) == "device"
