"""Import costs and layers: the core imports no framework, and no higher layer (DESIGN.md, "Layers")."""

from __future__ import annotations

import ast
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


# --------------------------------------------------------------------------- layers, by reading the source

CORE_MODULES = frozenset({"errors", "config", "_config", "hookspecs", "plugins"})
LAYER_NAMES = {1: "ree", 2: "the core", 3: "coordinator", 4: "plugins", 5: "the face"}


def layer_of(module: str) -> int | None:
    """The DESIGN.md layer of a dotted module name; None for the standard library and third parties."""
    parts = module.split(".")
    top = parts[0]
    if top == "ree":
        return 1
    if top == "coordinator":
        return 3
    if top == "plugins":
        return 4
    if top == "gensyn_integrations":
        # the package itself is the face's lazy re-exports; a named core module is the core
        return 2 if len(parts) > 1 and parts[1] in CORE_MODULES else 5
    return None


def layer_of_file(root: Path, path: Path) -> int | None:
    """The layer a source file belongs to, from its path under ``root``."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return layer_of(".".join(parts)) if parts else None


def _module_of(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(root: Path, path: Path, tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, dotted module)`` for every import in ``tree``, at any depth, and every
    ``importlib.import_module("literal")``; ``from x import y`` yields ``x.y`` when y is a module."""
    package = _module_of(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                sub = f"{base}.{a.name}" if base else a.name
                is_module = (root / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    root / sub.replace(".", "/") / "__init__.py"
                ).is_file()
                out.append((node.lineno, sub if is_module else base))
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            args = node.args
            if name in ("import_module", "__import__") and args:
                literal = _literal_prefix(args[0])
                if literal:
                    out.append((node.lineno, literal))
    return out


def _literal_prefix(arg: ast.expr) -> str:
    """The module a name argument names: the string itself, or the whole dotted parts an f-string
    starts with (``f"gensyn_integrations.{flavour}"`` names something in ``gensyn_integrations``)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr):
        head = ""
        for part in arg.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            head += part.value
        return head.rpartition(".")[0] if "." in head else ""
    return ""


def upward_imports(root: Path, files: list[Path]) -> list[str]:
    """Every import in ``files`` that goes up DESIGN.md's list of layers, as ``file:line: ...``."""
    bad: list[str] = []
    for path in sorted(files):
        here = layer_of_file(root, path)
        if here is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module in _imported(root, path, tree):
            there = layer_of(module)
            if there is not None and there > here:
                bad.append(
                    f"{path.relative_to(root)}:{line}: {LAYER_NAMES[here]} (layer {here}) imports "
                    f"{module} ({LAYER_NAMES[there]}, layer {there})"
                )
    return bad


def lower_layer_files(root: Path) -> list[Path]:
    """The source files of layers 1 to 4: ``ree/``, the core modules, ``coordinator/``, ``plugins/``."""
    files = [p for d in ("ree", "coordinator", "plugins") for p in (root / d).rglob("*.py")]
    files += [root / "gensyn_integrations" / f"{m}.py" for m in sorted(CORE_MODULES)]
    return [p for p in files if p.is_file()]


def test_no_import_goes_up_the_layers() -> None:
    files = lower_layer_files(REPO)
    assert len(files) > 50  # the walk found the packages
    assert {REPO / "plugins" / "lightning_executor.py", REPO / "gensyn_integrations" / "plugins.py"} <= set(files)
    bad = upward_imports(REPO, files)
    assert not bad, "imports that go up DESIGN.md's layers:\n" + "\n".join(bad)


def test_the_layer_check_finds_planted_upward_imports(tmp_path: Path) -> None:
    plant = {
        "ree/__init__.py": "",
        "ree/bad.py": "from gensyn_integrations.errors import ConfigError\n",
        "gensyn_integrations/__init__.py": "",
        "gensyn_integrations/errors.py": "import ree._errors\n",  # down: fine
        "gensyn_integrations/config.py": "def f():\n    import coordinator.tasks\n",
        "gensyn_integrations/_config.py": "",
        "gensyn_integrations/lightning/__init__.py": "",
        "gensyn_integrations/_lightning/__init__.py": "",
        "gensyn_integrations/_lightning/client.py": "import plugins\n",  # the face: not checked
        "coordinator/__init__.py": "",
        "coordinator/ok.py": "from gensyn_integrations import errors\nfrom . import ok\n",
        "coordinator/bad.py": "from gensyn_integrations import _config, lightning\n",
        "plugins/__init__.py": "",
        "plugins/ok.py": "import coordinator\nfrom gensyn_integrations.hookspecs import hookimpl\n",
        "plugins/bad.py": (
            "import importlib\n\n\n"
            "def run():\n"
            "    from gensyn_integrations._lightning.client import x\n"
            "    return importlib.import_module('gensyn_integrations.transformers')\n\n\n"
            "def twin(flavour):\n"
            "    return importlib.import_module(f'gensyn_integrations.{flavour}')\n"
        ),
        "gensyn_integrations/hookspecs.py": "from .errors import E\nfrom . import lightning\n",
    }
    for name, text in plant.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    bad = upward_imports(tmp_path, lower_layer_files(tmp_path))
    where = sorted(b.split(": ")[0] for b in bad)
    assert where == [
        "coordinator/bad.py:1",
        "gensyn_integrations/config.py:2",
        "gensyn_integrations/hookspecs.py:2",
        "plugins/bad.py:10",
        "plugins/bad.py:5",
        "plugins/bad.py:6",
        "ree/bad.py:1",
    ], bad
    assert "imports gensyn_integrations.lightning (the face, layer 5)" in "\n".join(bad)


@pytest.mark.parametrize("flavour", ["lightning", "pytorch_lightning"])
def test_the_lightning_face_reexports_the_executor_classes(flavour: str) -> None:
    import importlib

    face = importlib.import_module(f"gensyn_integrations.{flavour}")
    twin = importlib.import_module(f"plugins._lightning.twin_{flavour}")
    pl = importlib.import_module("pytorch_lightning" if flavour == "pytorch_lightning" else "lightning.pytorch")
    assert face.GensynTraceCallback is twin.GensynTraceCallback
    assert face.SafetensorsCheckpointIO is twin.SafetensorsCheckpointIO
    assert face.GensynStrategy._callback_cls is twin.GensynTraceCallback
    assert isinstance(face.GensynStrategy(role="executor").checkpoint_io, twin.SafetensorsCheckpointIO)
    assert pl.strategies.StrategyRegistry["gensyn"]["strategy"] is face.GensynStrategy
    assert face.GensynTraceCallback.__qualname__ == "GensynTraceCallback"  # Lightning's state_key


def test_the_transformers_and_accelerate_faces_reexport_the_executor_classes() -> None:
    import gensyn_integrations.accelerate as accel_face
    import gensyn_integrations.transformers as hf_face
    from plugins._accel.accelerator import Accelerator
    from plugins._hf.callback import GensynCallback
    from plugins._hf.trainer import ExecutorTrainer

    assert hf_face.GensynCallback is GensynCallback
    assert gensyn_integrations.GensynCallback is GensynCallback
    assert issubclass(hf_face.GensynTrainer, ExecutorTrainer)
    with pytest.raises(gensyn_integrations.ConfigError, match="role='client' is not offered here"):
        ExecutorTrainer(role="client")  # the solver's class cannot send a job on
    assert accel_face.Accelerator is Accelerator
    from gensyn_integrations import GensynStrategy
    from gensyn_integrations.lightning import GensynStrategy as strategy_cls

    assert GensynStrategy is strategy_cls
