"""GensynTraceCallback with the real Lightning: equal roots, sensitivity, resume in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ree
from tests.gensyn_integrations.lightning_app import run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore::pytorch_lightning.utilities.warnings.PossibleUserWarning"),
]


@pytest.fixture(scope="module")
def baseline() -> list[str]:
    cb = run(max_steps=10)
    assert cb.trace.steps == list(range(11))
    return cb.trace.roots


def test_two_runs_give_identical_roots(baseline: list[str]) -> None:
    assert run(max_steps=10).trace.roots == baseline
    assert len(set(baseline)) == len(baseline)  # every step changed the state


def test_num_workers_does_not_change_roots(baseline: list[str]) -> None:
    assert run(max_steps=10, num_workers=2).trace.roots == baseline


def test_changed_seed_changes_roots(baseline: list[str]) -> None:
    other = run(max_steps=10, seed=1).trace.roots
    assert all(a != b for a, b in zip(other, baseline, strict=True))


def test_one_changed_element_changes_roots(baseline: list[str]) -> None:
    poked = run(max_steps=10, poke=True).trace.roots
    assert poked[0] == baseline[0]  # data is not state: the initial root is the same
    assert poked[-1] != baseline[-1]
    first = next(i for i, (a, b) in enumerate(zip(poked, baseline, strict=True)) if a != b)
    assert all(a != b for a, b in zip(poked[first:], baseline[first:], strict=True))


def test_pytorch_lightning_twin_records_the_same_roots(baseline: list[str]) -> None:
    assert run(max_steps=10, flavour="pytorch_lightning").trace.roots == baseline


def test_commit_interval_and_accumulation() -> None:
    cb = run(max_steps=7, commit_interval=3, accumulate=2)
    assert cb.step == 7  # optimizer steps, not batches
    assert cb.trace.steps == [0, 3, 6, 7]
    assert cb.trace.final


def test_save_at_step_5_then_resume_in_a_new_process(tmp_path: Path, baseline: list[str]) -> None:
    cb = run(max_steps=10, checkpoint_dir=str(tmp_path))
    assert cb.trace.roots == baseline
    ckpt = tmp_path / "step-00000005.safetensors"
    # the file is an ordinary REE checkpoint whose root is the trace's root at step 5
    loaded = ree.load_checkpoint(ckpt, expected_root=baseline[5])
    assert loaded.tree.leaves["ree/step"] == 5
    assert loaded.tree.leaves["data/index"] == 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "tests.gensyn_integrations.lightning_app",
         "--max-steps", "10", "--resume", str(ckpt)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = ree.Trace.from_json(out.stdout.strip().splitlines()[-1])
    assert resumed.roots == baseline
    assert resumed.steps == list(range(11))


@pytest.mark.parametrize("manual", [False, True])
def test_a_module_without_a_scheduler_resumes(tmp_path: Path, manual: bool) -> None:
    full = run(max_steps=6, checkpoint_dir=str(tmp_path), scheduler=False, manual=manual)
    resumed = run(max_steps=6, resume=str(tmp_path / "step-00000003.safetensors"),
                  scheduler=False, manual=manual)  # fmt: skip
    assert resumed.trace.roots == full.trace.roots
    assert len(set(full.trace.roots)) == 7


def test_resume_from_a_pickle_is_refused(tmp_path: Path) -> None:
    import pickle

    from tests.ree.test_checkpoint import Planted

    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"state_dict": Planted(str(marker))}))
    with pytest.raises(ree.UnsafeCheckpointError):
        run(max_steps=2, resume=str(bad))
    assert not marker.exists()


def test_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    run(max_steps=3, checkpoint_dir=str(tmp_path))
    ckpt = tmp_path / "step-00000002.safetensors"
    raw = bytearray(ckpt.read_bytes())
    raw[-3] ^= 0x10
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(ree.RootMismatchError):
        run(max_steps=4, resume=str(ckpt))


def test_trace_json_is_stable(baseline: list[str]) -> None:
    cb = run(max_steps=4)
    doc = json.loads(cb.trace.dumps())
    assert doc["roots"] == baseline[:5]
    assert ree.Trace.from_json(cb.trace.dumps()).root == cb.trace.root


@pytest.mark.parametrize("flavour", ["lightning", "pytorch_lightning"])
def test_validation_loop_does_not_disturb_roots(baseline: list[str], flavour: str) -> None:
    assert run(max_steps=10, val_every=3, flavour=flavour).trace.roots == baseline


@pytest.mark.parametrize("flavour", ["lightning", "pytorch_lightning"])
def test_manual_optimization_records_the_same_roots(baseline: list[str], flavour: str) -> None:
    assert run(max_steps=10, manual=True, flavour=flavour).trace.roots == baseline


@pytest.mark.parametrize("flavour", ["lightning", "pytorch_lightning"])
def test_strategy_executor_role_records_the_callback_trace(baseline: list[str], flavour: str) -> None:
    mod = __import__(f"gensyn_integrations.{flavour}", fromlist=["GensynStrategy"])
    strategy = mod.GensynStrategy(role="executor", commit_interval=1)
    cb = run(max_steps=10, flavour=flavour, strategy=strategy)
    assert strategy.trace is cb.trace
    assert cb.trace.roots == baseline


@pytest.mark.parametrize("flavour", ["lightning", "pytorch_lightning"])
def test_strategy_registered_by_name(baseline: list[str], flavour: str) -> None:
    __import__(f"gensyn_integrations.{flavour}")
    cb = run(max_steps=10, flavour=flavour, strategy="gensyn")
    assert cb.trace.commit_interval == 10  # the default: a root every 10 steps
    assert cb.trace.steps == [0, 10]
    assert cb.trace.roots == [baseline[0], baseline[10]]


def test_strategy_client_role_is_the_default_and_launches_remotely() -> None:
    from gensyn_integrations._lightning.client import ClientLauncher
    from gensyn_integrations.errors import ConfigError
    from gensyn_integrations.lightning import GensynStrategy

    strategy = GensynStrategy()
    assert strategy.role == "client"
    assert strategy.receipt is None
    strategy._configure_launcher()
    assert isinstance(strategy.launcher, ClientLauncher)
    assert strategy.launcher.is_interactive_compatible
    with pytest.raises(ConfigError, match="not a role"):
        GensynStrategy(role="solver")
