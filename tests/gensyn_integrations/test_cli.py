"""The ``gensyn`` command line: help, the ree and config commands, and how errors look."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ree
from gensyn_integrations.cli import main
from gensyn_integrations.config import load_config, to_dict

REPO = Path(__file__).resolve().parents[2]
FAKE_FINGERPRINT = {
    "torch": {"version": "2.13.0", "threads": 1},
    "device": "cpu",
    "flags": ["deterministic"],
    "hash": "f" * 64,
}



def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fake_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    # through the module's dict: ree's lazy __getattr__ would import the real one first
    monkeypatch.setitem(vars(ree), "fingerprint", lambda: dict(FAKE_FINGERPRINT))


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, str]:
    """An REE checkpoint on disk and its root."""
    import torch

    path = tmp_path / "step-5.safetensors"
    tree = ree.StateTree({"model/w": torch.arange(6.0).reshape(2, 3), "ree/step": 5})
    return path, ree.save_checkpoint(path, tree)


# --- help and version ----------------------------------------------------------------


def test_help_lists_the_command_groups_and_global_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for word in ("config", "ree", "--override", "--config", "--traceback", "examples:"):
        assert word in out


@pytest.mark.parametrize(
    ("group", "commands"), [("ree", ["fingerprint", "root"]), ("config", ["show", "check"])]
)
def test_group_help_lists_its_commands(
    capsys: pytest.CaptureFixture[str], group: str, commands: list[str]
) -> None:
    code, out, _ = run(capsys, group, "--help")
    assert code == 0
    assert all(c in out for c in commands)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.startswith("gensyn ")


@pytest.mark.parametrize("argv", [[], ["ree"], ["nope"], ["ree", "root"]])
def test_missing_or_unknown_commands_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage: gensyn" in err


def test_python_dash_m_runs_the_cli() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gensyn_integrations", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ree" in proc.stdout
    assert "usage: gensyn" in proc.stdout


# --- ree fingerprint ---------------------------------------------------------------------


@pytest.mark.usefixtures("fake_fingerprint")
def test_fingerprint_json_is_the_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ree", "fingerprint", "--json")
    assert code == 0
    assert json.loads(out) == FAKE_FINGERPRINT


@pytest.mark.usefixtures("fake_fingerprint")
def test_fingerprint_table_shows_every_setting_and_the_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "ree", "fingerprint")
    assert code == 0
    for text in ("torch.version", "2.13.0", "torch.threads", '["deterministic"]', "f" * 64):
        assert text in out


def test_real_fingerprint_json_parses_and_has_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    import ree

    code, out, _ = run(capsys, "ree", "fingerprint", "--json")
    assert code == 0
    with ree.deterministic(mode="device", seed=0):  # the CLI reports the REE's settings
        expected = ree.fingerprint()["hash"]
    assert json.loads(out)["hash"] == expected


# --- ree root ----------------------------------------------------------------------------


def test_root_prints_the_state_root(
    capsys: pytest.CaptureFixture[str], checkpoint: tuple[Path, str]
) -> None:
    path, root = checkpoint
    code, out, _ = run(capsys, "ree", "root", str(path))
    assert (code, out) == (0, root + "\n")


def test_root_json_with_a_matching_expectation(
    capsys: pytest.CaptureFixture[str], checkpoint: tuple[Path, str]
) -> None:
    path, root = checkpoint
    code, out, _ = run(capsys, "ree", "root", str(path), "--expect", "0x" + root.upper(), "--json")
    assert code == 0
    assert json.loads(out) == {
        "checkpoint": str(path),
        "root": root,
        "leaves": 2,
        "expected": root,
        "match": True,
    }


def test_root_mismatch_exits_1_and_says_so(
    capsys: pytest.CaptureFixture[str], checkpoint: tuple[Path, str]
) -> None:
    path, root = checkpoint
    other = ("0" if root[0] != "0" else "1") + root[1:]
    code, out, err = run(capsys, "ree", "root", str(path), "--expect", other)
    assert code == 1
    assert out == root + "\n"
    assert f"not the expected {other}" in err
    assert "Traceback" not in err


def test_a_malformed_expected_root_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ree", "root", "x", "--expect", "abc")
    assert code == 2
    assert "64 hex digits" in err


def test_a_missing_checkpoint_is_an_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "ree", "root", "nowhere.safetensors")
    assert code == 2
    assert out == ""
    assert err.startswith("gensyn: error: There is no checkpoint at 'nowhere.safetensors'")
    assert "Traceback" not in err


def test_a_pickle_is_refused_without_a_traceback_unless_asked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    code, _, err = run(capsys, "ree", "root", str(path))
    assert code == 2
    assert "pickle" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "--traceback", "ree", "root", str(path))
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert "UnsafeCheckpointError" in err


# --- config ------------------------------------------------------------------------------


def test_config_show_prints_the_merged_config_as_yaml(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENSYN_REE__SEED", "42")
    code, out, _ = run(capsys, "-o", "task.commit_interval=5", "config", "show")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown == to_dict(load_config(overrides=["task.commit_interval=5"]))
    assert (shown["task"]["commit_interval"], shown["ree"]["seed"]) == (5, 42)


def test_a_config_error_is_one_red_paragraph_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-o", "task.comit_interval=5", "config", "show")
    assert code == 2
    assert out == ""
    assert err.startswith("gensyn: error: command line (task.comit_interval=5): unknown key")
    assert "'task.commit_interval'" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_gensyn_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENSYN_DEBUG", "1")
    code, _, err = run(capsys, "-o", "task.comit_interval=5", "config", "show")
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("gensyn: error:")


def test_config_check_accepts_a_valid_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("task:\n  commit_interval: 4\n")
    code, out, _ = run(capsys, "config", "check", str(path))
    assert code == 0
    assert out.startswith("ok: ")
    assert str(path) in out


def test_config_check_reports_the_line_of_a_bad_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "gensyn.yaml").write_text("ree:\n  mode: device\n  sed: 3\n")
    code, _, err = run(capsys, "config", "check")
    assert code == 2
    assert "gensyn.yaml, line 3: unknown key 'ree.sed'. Did you mean 'ree.seed'?" in err


def test_the_global_config_option_is_used(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("storage:\n  backend: ipfs\n")
    code, out, _ = run(capsys, "--config", str(path), "config", "show")
    assert code == 0
    assert yaml.safe_load(out)["storage"]["backend"] == "ipfs"
