"""``gensyn launch --remote``: an Accelerate script on the embedded devnet, and its executor plugin.

The remote run (one rank) must equal a local executor-role run of the same
script bit for bit: the final root and every model tensor.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

import ree
from gensyn_integrations.cli import main

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "accelerate_classifier.py"


@pytest.fixture(autouse=True)
def _one_local_rank(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Roots every 3 steps; accelerate's process-wide singletons reset after each test."""
    monkeypatch.setenv("GENSYN_TASK__COMMIT_INTERVAL", "3")
    monkeypatch.setenv("GENSYN_REE__THREADS", "1")
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("accelerate_classifier", RECIPE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _local(tmp_path: Path, steps: int) -> tuple[ree.Trace, ree.Checkpoint]:
    """The recipe on one local rank in the executor role; its trace and final REE checkpoint."""
    from accelerate.state import AcceleratorState, GradientState

    args = ["--out", str(tmp_path / "local"), "--max-steps", str(steps), "--save-at", str(steps),
            "--save-dir", str(tmp_path / "saved")]  # fmt: skip
    assert _recipe().main(args) == 0
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    trace = ree.Trace.from_json((tmp_path / "local" / "trace-rank0.json").read_bytes())
    return trace, ree.load_checkpoint(tmp_path / "saved" / "ree-state.safetensors")


@pytest.mark.slow
def test_remote_launch_returns_a_verified_checkpoint_equal_to_a_local_executor_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, local = _local(tmp_path, 6)  # the solver's two segments meet at step 3
    assert trace.steps == [0, 3, 6]
    capsys.readouterr()
    result = tmp_path / "result.safetensors"
    argv = ["launch", "--remote", "--steps", "6", "--result", str(result), str(RECIPE),
            "--max-steps", "6"]  # fmt: skip
    assert main(argv) == 0
    receipt = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert receipt["verified"]
    assert receipt["outcome"] == "verified"
    assert receipt["steps"] == 6
    assert receipt["final_root"] == trace.roots[-1] == local.root
    assert receipt["task_id"] >= 1
    assert receipt["transactions"]
    assert receipt["result_cids"][0]
    assert len(receipt["solvers"]) == 1
    assert receipt["cost"] > receipt["fee_burned"] > 0
    got = ree.load_checkpoint(result, expected_root=receipt["final_root"])
    want_model, got_model = local.tree.subtree("model/"), got.tree.subtree("model/")
    assert want_model.keys() == got_model.keys()
    for k in want_model:
        assert torch.equal(want_model[k], got_model[k]), k


@pytest.mark.slow
def test_the_executor_runs_segments_and_commits_a_failing_or_short_script(tmp_path: Path) -> None:
    from coordinator.tasks import RunRequest, failure_digest
    from gensyn_integrations._accel.remote import build_job
    from gensyn_integrations.config import load_config
    from plugins.accelerate_executor import gensyn_verify_interval, run_accelerate

    trace, _ = _local(tmp_path, 6)
    spec, files = build_job(load_config(), str(RECIPE), ["--max-steps", "6"], 6)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name, data in files.items():
        (bundle / name).write_bytes(data)
    first = run_accelerate(RunRequest(spec, bundle, tmp_path / "s1", end_step=3))
    assert first.trace.roots == trace.roots[:2]
    assert sorted(first.checkpoints) == [0, 3]
    assert len(first.losses) == 3
    req = RunRequest(spec, bundle, tmp_path / "v")
    root = gensyn_verify_interval(req, first.checkpoints[3], 3, 6, tmp_path / "v0", None)
    assert root == trace.roots[2]

    # the script raises at step 2: a failure commit with its traceback
    bad = tmp_path / "bad"
    bad.mkdir()
    source = RECIPE.read_text().replace(
        "                optimizer.step()\n",
        "                optimizer.step()\n"
        "                if accelerator.gensyn_step == 2:\n"
        "                    raise ValueError('boom at two')\n",
    )
    (bad / "accelerate_classifier.py").write_text(source)
    res = run_accelerate(RunRequest(spec, bad, tmp_path / "b1", end_step=6))
    assert res.failed
    assert res.error_type == "ScriptError"
    assert "boom at two" in res.traceback
    assert res.steps_done == 2
    assert res.final_root == failure_digest(3)
    # a script whose loop ends before end_step: the same kind of commit, saying why
    spec_short, _ = build_job(load_config(), str(RECIPE), ["--max-steps", "2"], 6)
    res = run_accelerate(RunRequest(spec_short, bundle, tmp_path / "b2", end_step=6))
    assert res.failed
    assert res.error_type == "ScriptEndedEarly"
    assert "ended after 2 optimizer steps" in res.traceback


def test_what_cannot_go_to_the_network_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    (tmp_path / "my-train.py").write_text("raise SystemExit('must not run')\n")
    cases = [
        (["launch", "--remote", "train.py"], "--steps 0"),
        (["launch", "--remote", "--steps", "2", "my-train.py"], "module name"),
        (["launch", "--remote", "--steps", "2", "--ship", "nope.csv", "train.py"], "'nope.csv' is not a file"),
        (["launch", "--remote", "--dry-run", "--steps", "2", "train.py"], "does not combine"),
    ]  # fmt: skip
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err, err
        assert "Traceback" not in err


def test_the_client_role_is_offered_by_launch_not_by_the_accelerator() -> None:
    from gensyn_integrations.accelerate import Accelerator
    from gensyn_integrations.errors import ConfigError

    with pytest.raises(ConfigError, match=r"gensyn launch --remote"):
        Accelerator(role="client")


class _Posted(Exception):  # noqa: N818 - a stand-in for the network, never shown to a user
    """What the fake ``run_remote`` raises once it has seen its arguments."""


def test_task_id_and_retries_reach_the_network_road(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gensyn_integrations._remote as remote

    seen: dict[str, object] = {}

    def run_remote(spec: object, files: object, **kw: object) -> object:
        seen.clear()
        seen.update(spec=spec, files=files, **kw)
        raise _Posted

    monkeypatch.setattr(remote, "run_remote", run_remote)
    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(_Posted):
        main(["launch", "--remote", "--steps", "2", "--retries", "3", "train.py"])
    assert (seen["retries"], seen["task_id"]) == (3, None)
    assert seen["spec"].steps == 2  # type: ignore[attr-defined]
    seen["on_posted"](4)  # type: ignore[operator]
    assert "re-attach with `gensyn launch --remote --task-id 4 train.py`" in capsys.readouterr().err
    with pytest.raises(_Posted):  # re-attach: nothing is shipped, --steps is not needed
        main(["launch", "--remote", "--task-id", "4", "train.py"])
    assert (seen["spec"], seen["files"], seen["task_id"], seen["retries"]) == (None, {}, 4, 0)


def test_re_attaching_without_a_configured_network_or_to_another_script_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from gensyn_integrations._accel.remote import _check_reattach
    from gensyn_integrations.errors import ConfigError

    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    cases = [
        (["launch", "--remote", "--task-id", "5", "train.py"], "task_id=5 re-attaches to a task on a configured network"),
        (["launch", "--remote", "--steps", "2", "--retries", "-1", "train.py"], "--retries -1: pass 0 or more"),
        (["launch", "--task-id", "5", "train.py"], "--task-id is a setting of the remote task; it needs --remote"),
        (["launch", "--retries", "2", "train.py"], "--retries is a setting of the remote task"),
    ]  # fmt: skip
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err, err
        assert "Traceback" not in err
    _check_reattach(5, "dir/train.py", SimpleNamespace(framework="accelerate", init_args={"script": "train.py"}))
    with pytest.raises(ConfigError, match=r"task 5 runs 'other.py', not 'train.py'"):
        _check_reattach(5, "train.py", SimpleNamespace(framework="accelerate", init_args={"script": "other.py"}))


@pytest.mark.parametrize("mode", ["device", "strict"])
def test_the_task_takes_the_configured_ree_mode(mode: str) -> None:
    from gensyn_integrations._accel.remote import build_job
    from gensyn_integrations.config import load_config

    cfg = load_config(overrides=[f"ree.mode={mode}"], env={})
    spec, files = build_job(cfg, str(RECIPE), ["--max-steps", "2"], 2)
    assert spec.ree_mode == mode
    assert RECIPE.name in files
