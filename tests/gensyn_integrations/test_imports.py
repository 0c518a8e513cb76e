"""Import costs and layers: the core imports no framework, and no higher layer (DESIGN.md, "Layers")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gensyn_integrations
import ree._errors

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "lightning", "pytorch_lightning", "transformers", "accelerate", "web3"]
HIGHER = ["plugins", "coordinator"]  # layers above the core


def imported_after(statement: str) -> set[str]:
    """Top-level packages in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        (
            "import gensyn_integrations, gensyn_integrations.config, gensyn_integrations.errors, "
            "gensyn_integrations.hookspecs, gensyn_integrations.plugins\n"
            "gensyn_integrations.load_config(env={})",
            HEAVY + HIGHER,
        ),
        ("import gensyn_integrations.cli\ngensyn_integrations.cli.build_parser()", HEAVY),
    ],
    ids=["core", "cli"],
)
def test_importing_does_not_pull_in_frameworks_or_higher_layers(
    statement: str, forbidden: list[str]
) -> None:
    loaded = imported_after(statement)
    assert "gensyn_integrations" in loaded  # the probe works
    assert not loaded & set(forbidden), (
        f"importing pulled in {sorted(loaded & set(forbidden))}; keep those imports inside "
        "the functions that need them (ree/__init__ must stay lazy for torch)"
    )


def test_public_names_are_lazy_reexports() -> None:
    from gensyn_integrations.config import load_config
    from gensyn_integrations.errors import ConfigError

    assert gensyn_integrations.GensynError is ree._errors.GensynError
    assert gensyn_integrations.ConfigError is ConfigError
    assert gensyn_integrations.load_config is load_config
    assert isinstance(gensyn_integrations.__version__, str)
    assert set(gensyn_integrations.__all__) <= set(dir(gensyn_integrations))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = gensyn_integrations.nope  # type: ignore[attr-defined]
