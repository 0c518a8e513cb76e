"""Loading a task's code and calling its entry point: shared by the built-in executors."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from coordinator.tasks import RunRequest, TaskRunError


def load_code_file(path: Path, *, prefix: str = "_gensyn_task", reuse: bool = False) -> ModuleType:
    """Import a shipped source file under a module name of its own (path-hashed).

    ``reuse=True`` keeps one module per file and process, so classes loaded twice
    are the same objects; otherwise the file runs afresh each call.
    """
    unique = f"{prefix}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{path.stem}"
    if reuse and unique in sys.modules:
        return sys.modules[unique]
    s = importlib.util.spec_from_file_location(unique, path)
    if s is None or s.loader is None:
        raise TaskRunError(f"cannot load the task code {str(path)!r}")
    mod = importlib.util.module_from_spec(s)
    sys.modules[unique] = mod
    s.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def code_path(bundle_dir: Path) -> Iterator[None]:
    """Put the bundle folder first on ``sys.path`` while shipped code loads (its own imports)."""
    entry = str(Path(bundle_dir).resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def import_shipped(bundle_dir: Path, name: str) -> ModuleType:
    """Import the module ``name`` (``pkg.sub.mod``) of a package shipped in the bundle with its layout.

    A module of that name already imported from elsewhere (the client's own
    process, where it is the same source) is reused; in a solver's fresh process
    the bundle's copy is the only one.
    """
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        raise TaskRunError(f"the shipped module name {name!r} is not a dotted Python name")
    root = Path(bundle_dir).resolve()
    rel = root.joinpath(*parts)
    if not (rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file()) and name not in sys.modules:
        raise TaskRunError(f"the bundle has no module {name!r} (looked for {rel}.py)")
    with code_path(root):
        try:
            return importlib.import_module(name)
        except ImportError as e:
            raise TaskRunError(f"cannot import the shipped module {name!r}: {e}") from e


def entry_function(req: RunRequest) -> Callable[..., Any]:
    """The entry function of ``req``'s task: from the bundle's code, or an installed module."""
    spec = req.spec
    mod_name, _, fn_name = spec.entry.partition(":")
    file = f"{mod_name}.py"
    if file in spec.code:
        mod = load_code_file(req.bundle_dir / file)
    else:
        mod = importlib.import_module(mod_name)
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise TaskRunError(f"entry {spec.entry!r}: {mod_name} has no function {fn_name!r}")
    return fn


def call_entry(req: RunRequest) -> Callable[[str], Any]:
    """Build the job with the spec's init args (and ``bundle_dir`` if the entry takes it).

    Returns a getter: ``get(name)`` reads a key of a mapping job or an attribute
    of an object job, None when absent.
    """
    fn = entry_function(req)
    kwargs = dict(req.spec.init_args)
    if "bundle_dir" in inspect.signature(fn).parameters:
        kwargs["bundle_dir"] = req.bundle_dir
    job = fn(**kwargs)
    if isinstance(job, Mapping):
        return lambda name: job.get(name)
    return lambda name: getattr(job, name, None)
