"""What of the user's code travels with a task, and how the executor finds it again.

DESIGN.md, "Data flow", step 2: the bundle's code is "the source files that
define the module and datamodule, or the import path of an installed package".
A class is found by one of three references (``plugins.lightning_executor``
reads them):

* ``import``: the class lives in an installed distribution (site-packages, or an
  editable install such as ``lightning.pytorch.demos.boring_classes``); nothing
  ships and the solver imports it.
* ``file``: the class lives in a script run as ``__main__``; the file ships in
  the bundle root and is loaded under a name of its own.
* ``module``: the class lives in a local (not installed) module, top-level
  (``mymodels.py`` next to the script) or in a package; the module and the
  ``__init__.py`` of each package above it ship with their layout
  (``pkg/__init__.py``, ``pkg/models.py``), and the solver imports it by name.

Local modules the shipped files import (``from mymodels import Net`` beside a
script, ``from .layers import Block`` in a package) ship too, found by reading
each file's imports, transitively. Modules imported only lazily, inside a
function that has not run yet, are not seen: import them at the top of a file.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

from gensyn_integrations.errors import ConfigError

MAX_FILES = 256
MAX_BYTES = 16 * 2**20


class ShipError(ConfigError):
    """A part of the job cannot be sent to the network as source; the message says how to fix it."""


def fix(what: str, why: str, how: str) -> ShipError:
    """A :class:`ShipError`: cannot ship ``what`` because ``why``; ``how`` to fix it."""
    return ShipError(f"cannot ship {what} to the network: {why}. {how}", key="fit",
                     source="GensynStrategy(role='client')")  # fmt: skip


@functools.lru_cache(maxsize=1)
def _site_roots() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    keys = ("purelib", "platlib", "stdlib", "platstdlib")
    return tuple({Path(paths[k]).resolve() for k in keys if k in paths})


@functools.lru_cache(maxsize=1)
def _distributed_names() -> frozenset[str]:
    import importlib.metadata

    return frozenset(importlib.metadata.packages_distributions())


def installed(path: Path, module: str) -> bool:
    """True when ``module`` (at ``path``) comes from an installed distribution or the standard library."""
    if any(path.is_relative_to(r) for r in _site_roots()):
        return True
    return module != "__main__" and module.partition(".")[0] in _distributed_names()


def source_of(cls: type, what: str) -> Path:
    """The resolved source file of ``cls``; :class:`ShipError` when it has none a solver could read."""
    name = cls.__qualname__
    how = f"define {name} at the top level of a .py file and import it from there"
    if "<locals>" in name or "<lambda>" in name:
        raise fix(what, f"{name} is defined inside a function", how)
    home = sys.modules.get(cls.__module__)
    found: Any = home
    for part in name.split("."):
        found = getattr(found, part, None)
    try:
        src = inspect.getsourcefile(cls) if found is cls else None
    except (TypeError, OSError):
        src = None
    if not src or src.startswith("<") or not Path(src).is_file():
        where = "__main__ of a notebook or the REPL" if cls.__module__ == "__main__" else cls.__module__
        raise fix(what, f"{name} has no source file (it was defined in {where})", how)
    return Path(src).resolve()


def _root_of(path: Path, module: str) -> Path:
    """The ``sys.path`` folder that ``module`` (at ``path``) is imported from."""
    root = path.parent.parent if path.name == "__init__.py" else path.parent
    for _ in range(module.count(".")):
        root = root.parent
    return root


def _module_file(name: str) -> Path | None:
    """The source file of an imported or top-level importable module, else None."""
    mod: ModuleType | None = sys.modules.get(name)
    file = getattr(mod, "__file__", None) if mod is not None else None
    if file is None and mod is None and "." not in name:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        file = spec.origin if spec is not None and spec.has_location else None
    if not file or not str(file).endswith(".py"):
        return None
    p = Path(file).resolve()
    return p if p.is_file() else None


def _imports(source: bytes, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules a file imports at any depth of its syntax tree."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target:
                continue
            names.add(target)
            names.update(f"{target}.{a.name}" for a in node.names if a.name != "*")
    out: set[str] = set()
    for n in names:  # a dotted import imports its parents too
        parts = n.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return out


class CodeCollector:
    """Gathers the files a job's classes need, named as they sit under their import root."""

    def __init__(self) -> None:
        """Start with no files."""
        self.files: dict[str, bytes] = {}
        self._seen: set[str] = set()

    def add_class(self, cls: type, what: str) -> dict[str, Any]:
        """Ship what ``cls`` needs; return how the executor finds it (``file``/``module``/``import``)."""
        path = source_of(cls, what)
        module = cls.__module__
        if installed(path, module):
            return {"import": module}
        if module == "__main__":  # a script: it ships as a file, loaded under a name of its own
            if not path.stem.isidentifier():
                raise fix(what, f"its file {path.name!r} is not a Python module name", "rename the file")
            self._add(path.name, path, what)
            self._follow(path, path.stem, False, what)
            return {"file": path.name}
        # any other module is imported by its own name from the bundle, so the classes that
        # shipped files import from each other stay one class
        self._add_module(module, path, what)
        return {"module": module}

    def _add_module(self, module: str, path: Path, what: str) -> None:
        """Ship ``module`` (at ``path``) and the ``__init__.py`` of each package above it."""
        root = _root_of(path, module)
        parts = module.split(".")
        for i in range(1, len(parts)):
            init = root.joinpath(*parts[:i], "__init__.py")
            if init.is_file():
                self._add("/".join(parts[:i]) + "/__init__.py", init, what)
                self._follow(init, ".".join(parts[:i]), True, what)
        rel = path.relative_to(root).as_posix()
        self._add(rel, path, what)
        self._follow(path, module, path.name == "__init__.py", what)

    def _add(self, name: str, path: Path, what: str) -> None:
        data = path.read_bytes()
        old = self.files.get(name)
        if old is not None and old != data:
            raise fix(what, f"two different files would be shipped as {name!r}", "rename one of them")
        self.files[name] = data
        if len(self.files) > MAX_FILES or sum(map(len, self.files.values())) > MAX_BYTES:
            raise fix(what, f"its local code grew past {MAX_FILES} files or {MAX_BYTES >> 20} MiB",
                      "install the package (pip install -e .), so it goes by import reference")  # fmt: skip

    def _follow(self, path: Path, module: str, is_package: bool, what: str) -> None:
        """Ship the local modules that ``path`` imports, and theirs."""
        key = str(path)
        if key in self._seen:
            return
        self._seen.add(key)
        for name in sorted(_imports(path.read_bytes(), module, is_package)):
            file = _module_file(name)
            if file is None or file == path or installed(file, name):
                continue
            if _root_of(file, name).joinpath(*name.split(".")) not in (file.with_suffix(""), file.parent):
                continue  # not where an import of `name` would find it (a __main__ alias, a moved file)
            self._add_module(name, file, what)
