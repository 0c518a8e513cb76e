"""Fixtures for the gensyn_integrations core and CLI: a clean environment and real plugin dists."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run each test in an empty directory with no GENSYN_* variables from the caller's shell."""
    for name in list(os.environ):
        if name.startswith("GENSYN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


MakeDist = Callable[..., Path]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Install a tiny real distribution on a temporary sys.path entry.

    ``make_dist("acme-gensyn", {"acme": "acme_plugin"}, {"acme_plugin": "<source>"})``
    writes ``acme_plugin.py`` and an ``acme_gensyn-0.1.dist-info`` whose
    ``entry_points.txt`` declares ``acme = acme_plugin`` in the group
    ``gensyn_integrations``, so importlib.metadata finds and loads it for real.
    Each call gets its own sys.path entry; created modules leave sys.modules
    at teardown.
    """
    created: list[str] = []
    count = 0

    def make(
        dist: str,
        entry_points: dict[str, str],
        modules: dict[str, str],
        group: str = "gensyn_integrations",
    ) -> Path:
        nonlocal count
        count += 1
        site = tmp_path / f"site{count}"
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        eps = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{group}]\n{eps}")
        for module, source in modules.items():
            (site / f"{module}.py").write_text(source)
            created.append(module)
        monkeypatch.syspath_prepend(str(site))
        return site

    yield make
    for module in created:
        sys.modules.pop(module, None)
