"""REE checkpoints: atomic safetensors + JSON, root verified, pickles refused unread."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import ree
from ree._errors import CheckpointError, RootMismatchError, UnsafeCheckpointError


def _tree() -> ree.StateTree:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return ree.capture_state(model, opt, step=1, data={"epoch": 0, "index": 4, "seed": 0}).snapshot()


def test_round_trip_verifies_root(tmp_path: Path) -> None:
    tree = _tree()
    root = ree.save_checkpoint(tmp_path / "c.safetensors", tree, extra={"trace": {"n": 1}})
    assert root == tree.root
    ck = ree.load_checkpoint(tmp_path / "c.safetensors", expected_root=root)
    assert ck.root == root
    assert ck.extra == {"trace": {"n": 1}}
    assert ck.tree.names == tree.names
    for name, v in tree.leaves.items():
        got = ck.tree.leaves[name]
        if isinstance(v, torch.Tensor):
            assert torch.equal(got, v)
            assert got.dtype == v.dtype
        else:
            assert got == v


def test_same_state_same_bytes(tmp_path: Path) -> None:
    tree = _tree()
    ree.save_checkpoint(tmp_path / "a", tree)
    ree.save_checkpoint(tmp_path / "b", tree.snapshot())
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_wrong_expected_root(tmp_path: Path) -> None:
    ree.save_checkpoint(tmp_path / "c", _tree())
    with pytest.raises(RootMismatchError, match="not the expected"):
        ree.load_checkpoint(tmp_path / "c", expected_root="00" * 32)


def test_tampered_tensor_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c"
    ree.save_checkpoint(path, _tree())
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # the last byte belongs to a tensor
    path.write_bytes(bytes(raw))
    with pytest.raises(RootMismatchError, match="altered"):
        ree.load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 5, 8, 20, -1])
def test_truncated(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "c"
    ree.save_checkpoint(path, _tree())
    raw = path.read_bytes()
    path.write_bytes(raw[:keep] if keep >= 0 else raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated|not a safetensors"):
        ree.load_checkpoint(path)


class Planted:
    """Unpickling this creates a file: proof that a loader ran pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_planted_pickle_is_refused_and_never_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": Planted(str(marker))}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        ree.load_checkpoint(path)
    assert not marker.exists()
    # the planted file really would have run: check the exploit itself, explicitly
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_torch_save_and_lightning_ckpt_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "x": Planted(str(marker))}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(UnsafeCheckpointError, match="zip archive"):
        ree.load_checkpoint(path)
    assert not marker.exists()


def test_plain_safetensors_weights_are_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(CheckpointError, match="without REE metadata"):
        ree.load_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ree.load_checkpoint(tmp_path / "nope")


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c"
    ree.save_checkpoint(path, _tree())
    before = path.read_bytes()

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        ree.save_checkpoint(path, ree.StateTree({"model/x": torch.zeros(3), "ree/step": 9}))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_header_length_that_looks_like_pickle(tmp_path: Path) -> None:
    """A safetensors header whose length byte is 0x80 is still a checkpoint, not a pickle."""
    for pad in range(0, 300, 7):
        tree = ree.StateTree({"model/" + "x" * pad: torch.zeros(1), "ree/step": 0})
        path = tmp_path / f"c{pad}"
        ree.save_checkpoint(path, tree)
        assert ree.load_checkpoint(path).root == tree.root
