"""Nodes run task code through the sandbox: same roots as in process, and the task cannot reach out.

:class:`coordinator.sandbox.SandboxedExecutor` copies the run's inputs into a
scratch folder, runs the executor child there as the task user, and brings the
outputs back. A job whose code dials the host's 127.0.0.1 (where anvil and the
store listen) or reads the node's keystore fails inside, and the node gets a
:class:`TaskRunError` that says so.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from coordinator.sandbox import Limits, Sandbox, SandboxedExecutor
from coordinator.sandbox._executor import _rebase
from coordinator.tasks import RunRequest, RunResult, TaskRunError, TaskSpec
from ree._trace import Trace
from tests.coordinator.network.net import JOB, executor

SPEC = TaskSpec(entry="tiny_job:build", code=("tiny_job.py",), steps=4, batch_size=8,
                commit_interval=2, budget=1, bond=1)  # fmt: skip


@pytest.fixture
def sandboxed(sandbox: Sandbox) -> SandboxedExecutor:
    return SandboxedExecutor(sandbox=sandbox, limits=Limits(cpu_s=120, memory_bytes=8 << 30,
                                                              wall_s=300))  # fmt: skip


def _bundle(where: Path, code: str | None = None) -> Path:
    b = where / "bundle"
    b.mkdir(parents=True)
    if code is None:
        shutil.copy(JOB, b / "tiny_job.py")
    else:
        (b / "tiny_job.py").write_text(code)
    return b


def test_a_sandboxed_run_equals_the_in_process_run(sandboxed: SandboxedExecutor,
                                                     tmp_path: Path) -> None:  # fmt: skip
    b = _bundle(tmp_path)
    here = executor().run(RunRequest(SPEC, b, tmp_path / "here", end_step=4, root_every=1))
    there = sandboxed.run(RunRequest(SPEC, b, tmp_path / "there", end_step=4, root_every=1))
    assert there.trace.roots == here.trace.roots
    assert sorted(there.checkpoints) == [0, 1, 2, 3, 4]
    for step, path in there.checkpoints.items():  # brought back, owned by this side's folder
        assert path.parent == tmp_path / "there"
        assert path.read_bytes() == here.checkpoints[step].read_bytes()
    # a dispute party's traced step: the op trace and the kept inputs come back too
    traced = sandboxed.run(RunRequest(SPEC, b, tmp_path / "traced", start_checkpoint=there.checkpoints[2],
                                      start_step=2, end_step=3, root_every=1, op_trace=[4]))  # fmt: skip
    assert traced.final_root == here.trace.roots[3]
    assert traced.op_trace is not None
    assert traced.op_trace.parent == tmp_path / "traced"
    assert set(traced.op_inputs) == {4}
    assert traced.op_inputs[4].exists()


def test_task_code_cannot_dial_the_host_or_read_the_keystore(
    sandboxed: SandboxedExecutor, tmp_path: Path, host_server: int, keystore: Path
) -> None:
    with socket.create_connection(("127.0.0.1", host_server), timeout=5) as c:  # the host can
        assert c.recv(4) == b"host"
    sneaky = JOB.read_text() + f'''

def dial(**kw):
    import socket
    socket.create_connection(("127.0.0.1", {host_server}), timeout=5).recv(4)
    return build(**kw)


def steal(**kw):
    open({str(keystore)!r}).read()
    return build(**kw)
'''
    b = _bundle(tmp_path, sneaky)
    for entry, sign in (("tiny_job:dial", "ConnectionRefusedError"),
                        ("tiny_job:steal", "PermissionError")):  # fmt: skip
        spec = TaskSpec(entry=entry, code=("tiny_job.py",), steps=2, batch_size=8,
                        commit_interval=1, budget=1, bond=1)  # fmt: skip
        with pytest.raises(TaskRunError, match=sign):
            sandboxed.run(RunRequest(spec, b, tmp_path / entry.split(":")[1], end_step=2))
    assert not (tmp_path / "dial").exists() or not any((tmp_path / "dial").iterdir())


def test_a_result_naming_a_path_outside_its_output_folder_is_refused(tmp_path: Path) -> None:
    inside = Path("/tmp/scratch/out")
    ok = RunResult(Trace(1, [0], [b"\0" * 32]), {0: inside / "step-0.safetensors"}, "00", 0)
    assert _rebase(ok, inside, tmp_path).checkpoints[0] == tmp_path / "step-0.safetensors"
    for bad in (Path("/etc/passwd"), inside / ".." / "request.json"):
        with pytest.raises(TaskRunError, match="outside its output folder"):
            _rebase(RunResult(Trace(1, [0], [b"\0" * 32]), {0: bad}, "00", 0), inside, tmp_path)


def test_a_node_picks_the_sandbox_where_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    from coordinator.nodes._daemon import task_executor
    from coordinator.sandbox import SandboxSetupError
    from coordinator.tasks import SubprocessExecutor

    ex, how = task_executor("off")
    assert isinstance(ex, SubprocessExecutor)
    assert "WITHOUT the sandbox" in how
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # not root: no namespaces, no task user
    ex, how = task_executor("auto")
    assert isinstance(ex, SubprocessExecutor)
    assert how.startswith("WARNING: task code runs without the sandbox")
    assert "root" in how
    with pytest.raises(SandboxSetupError, match="needs root"):
        task_executor("on")
    with pytest.raises(ValueError, match="sandbox must be one of"):
        task_executor("maybe")


def test_as_root_a_node_runs_task_code_in_the_sandbox(sandbox: Sandbox) -> None:
    from coordinator.nodes._daemon import task_executor

    for choice in ("auto", "on"):
        ex, how = task_executor(choice)
        assert isinstance(ex, SandboxedExecutor), how
        assert "in the sandbox" in how


def test_outputs_replaced_by_links_or_fifos_are_refused(sandboxed: SandboxedExecutor,
                                                        tmp_path: Path) -> None:  # fmt: skip
    """Task code that swaps a checkpoint for a symlink to /proc/self/environ (the node's
    environment holds its key, once the node reads it) or for a FIFO (the node would hang)
    gets a TaskRunError, and nothing comes back; links the run leaves beside its outputs (an
    executor's work folder links the bundle's files) are dropped, never moved back."""
    for kind, make in (("symlink", "os.symlink('/proc/self/environ', p)"),
                       ("fifo", "os.mkfifo(p)")):  # fmt: skip
        code = JOB.read_text() + f'''

def swap(**kw):
    import atexit, glob, os

    def at_exit():
        for p in glob.glob("/tmp/scratch/out/step-*.safetensors"):
            os.remove(p)
            {make}
    atexit.register(at_exit)
    return build(**kw)
'''
        b = _bundle(tmp_path / kind, code)
        spec = TaskSpec(entry="tiny_job:swap", code=("tiny_job.py",), steps=2, batch_size=8,
                        commit_interval=1, budget=1, bond=1)  # fmt: skip
        with pytest.raises(TaskRunError, match="did not leave as a plain file"):
            sandboxed.run(RunRequest(spec, b, tmp_path / kind / "out", end_step=2))
        assert not (tmp_path / kind / "out").exists()


def test_links_left_beside_the_outputs_are_dropped(sandboxed: SandboxedExecutor,
                                                   tmp_path: Path) -> None:  # fmt: skip
    code = JOB.read_text() + '''

def link(**kw):
    import atexit, os
    atexit.register(lambda: os.symlink("/proc/self/environ", "/tmp/scratch/out/extra"))
    return build(**kw)
'''
    spec = TaskSpec(entry="tiny_job:link", code=("tiny_job.py",), steps=2, batch_size=8,
                    commit_interval=1, budget=1, bond=1)  # fmt: skip
    res = sandboxed.run(RunRequest(spec, _bundle(tmp_path, code), tmp_path / "out", end_step=2))
    assert sorted(res.checkpoints) == [0, 1, 2]
    assert not (tmp_path / "out" / "extra").is_symlink()
    assert all(not p.is_symlink() for p in (tmp_path / "out").rglob("*"))
