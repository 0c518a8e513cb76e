"""Running executor requests in the sandbox: how a node runs someone else's task code.

:class:`SandboxedExecutor` is a :class:`coordinator.tasks.Executor`. For each
request it makes a fresh scratch directory, copies in what the run reads (the
unpacked bundle, the start checkpoint), rewrites the request's paths to their
places inside the sandbox (``/tmp/scratch/...``), runs the executor child
(``python -m gensyn_integrations._cli.node --exec``) there as the task user with
only ``lo`` and rlimits, and moves what it wrote (checkpoints, the trace sidecars,
an op trace) back to ``request.out_dir``, with the result's paths rewritten back.
The task never sees the node's workdir, its keystore or the chain.

The Python prefix and the source trees of this project's packages are bound
read-only into the sandbox, so an editable install imports there too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from coordinator.sandbox._errors import SandboxError
from coordinator.sandbox._sandbox import SANDBOX_SCRATCH, Limits, Sandbox
from coordinator.tasks import RunRequest, RunResult, TaskRunError

INSIDE = Path(SANDBOX_SCRATCH)
_PACKAGES = ("coordinator", "gensyn_integrations", "plugins", "ree")
MAX_RESULT_BYTES = 64 << 20


def source_roots() -> tuple[str, ...]:
    """The folders holding this project's top-level packages (one folder for a checkout)."""
    import importlib.util

    roots: list[str] = []
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for loc in spec.submodule_search_locations:
            parent = str(Path(loc).resolve().parent)
            if parent not in roots:
                roots.append(parent)
    return tuple(roots)


class SandboxedExecutor:
    """Runs each request in a :class:`Sandbox` (see the module docstring)."""

    def __init__(self, argv: Sequence[str] | None = None, *, sandbox: Sandbox | None = None,
                 limits: Limits | None = None, scratch_dir: Path | None = None) -> None:  # fmt: skip
        self.argv = list(argv or [sys.executable, "-m", "gensyn_integrations._cli.node", "--exec"])
        base = sandbox or Sandbox()
        expose = tuple(dict.fromkeys((*base.expose, *source_roots())))
        self.sandbox = dataclasses.replace(base, expose=expose)
        self.limits = limits
        self.scratch_dir = scratch_dir

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request`` in a fresh sandbox and return its result, paths on this side."""
        scratch = Path(tempfile.mkdtemp(prefix="gensyn-sandbox-", dir=self.scratch_dir))
        try:
            shutil.copytree(request.bundle_dir, scratch / "bundle", symlinks=False)
            start = None
            if request.start_checkpoint is not None:
                shutil.copyfile(request.start_checkpoint, scratch / "start.safetensors")
                start = INSIDE / "start.safetensors"
            inner = dataclasses.replace(request, bundle_dir=INSIDE / "bundle",
                                        out_dir=INSIDE / "out", start_checkpoint=start)  # fmt: skip
            (scratch / "out").mkdir()
            (scratch / "request.json").write_text(json.dumps(inner.to_json()))
            argv = [*self.argv, str(INSIDE / "request.json"), str(INSIDE / "result.json")]
            try:
                res = self.sandbox.run(argv, scratch, limits=self.limits)
            except SandboxError as e:
                raise TaskRunError(f"the sandbox could not run the task: {e}") from e
            if not res.ok or not (scratch / "result.json").exists():
                raise TaskRunError(f"the executor in the sandbox did not finish: {res.error()}")
            _plain_result(scratch / "result.json")
            try:
                result = RunResult.from_json(json.loads((scratch / "result.json").read_text()))
            except (ValueError, KeyError, TypeError) as e:
                raise TaskRunError(f"the sandboxed executor wrote an unreadable result: {e}") from e
            _only_plain_files(scratch / "out", _named(result, INSIDE / "out", scratch / "out"))
            request.out_dir.mkdir(parents=True, exist_ok=True)
            for p in (scratch / "out").iterdir():
                dest = request.out_dir / p.name
                if dest.is_dir():
                    shutil.rmtree(dest)
                shutil.move(str(p), dest)
            return _rebase(result, INSIDE / "out", request.out_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _plain_result(result: Path) -> None:
    st = os.lstat(result)
    if not stat.S_ISREG(st.st_mode):
        raise TaskRunError("the sandboxed run's result.json is not a plain file")
    if st.st_size > MAX_RESULT_BYTES:
        raise TaskRunError(f"the sandboxed run's result is over {MAX_RESULT_BYTES} bytes")


def _named(result: RunResult, inside: Path, here: Path) -> set[Path]:
    """The files ``result`` names, at their places in the scratch folder (others: see _rebase)."""
    paths = [*result.checkpoints.values(), *result.op_inputs.values()]
    if result.op_trace is not None:
        paths.append(result.op_trace)
    return {here / Path(p).relative_to(inside) for p in paths if Path(p).is_relative_to(inside)}


def _only_plain_files(out: Path, named: set[Path]) -> None:
    """Keep only plain files and folders of what the task left: a symlink moved back and read
    by the node would read the node's own files (``/proc/self/environ`` holds its key), a FIFO
    or device would hang it. Such an entry is dropped (an executor may leave links to the
    bundle in its work folder); a file the result names must be a plain file left in place."""
    for root, dirs, files in os.walk(out, followlinks=False):
        for name in [*dirs, *files]:
            p = Path(root) / name
            if not stat.S_ISREG(os.lstat(p).st_mode) and not stat.S_ISDIR(os.lstat(p).st_mode):
                p.unlink()
                if name in dirs:
                    dirs.remove(name)
    for p in sorted(named):
        try:
            plain = stat.S_ISREG(os.lstat(p).st_mode)
        except OSError:
            plain = False
        if not plain:
            raise TaskRunError(
                f"the sandboxed run's result names {p.name!r}, which it did not leave as a plain "
                "file; task code must not replace its outputs (a symlink, FIFO or device is refused)"
            )


def _rebase(result: RunResult, inside: Path, outside: Path) -> RunResult:
    """``result`` with every path under ``inside`` moved to ``outside``; any other path refused."""

    def move(p: Path) -> Path:
        try:
            rel = Path(p).relative_to(inside)
        except ValueError:
            raise TaskRunError(
                f"the sandboxed executor named {str(p)!r}, outside its output folder"
            ) from None
        if ".." in rel.parts:
            raise TaskRunError(f"the sandboxed executor named {str(p)!r}, outside its output folder")
        return outside / rel

    return dataclasses.replace(
        result,
        checkpoints={k: move(v) for k, v in result.checkpoints.items()},
        op_trace=None if result.op_trace is None else move(result.op_trace),
        op_inputs={k: move(v) for k, v in result.op_inputs.items()},
    )
