"""End to end on a real devnet: anvil with block time 1, a LocalStore, a solver process.

The only test here with real processes; chain time is moved with
evm_increaseTime/evm_mine rather than by sleeping through the challenge window.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ree
from coordinator.chain import SlotState
from coordinator.devnet import Devnet, devnet
from coordinator.storage import LocalStore
from coordinator.tasks import TaskClient, TaskSpec
from gensyn_integrations.cli import main as gensyn
from tests.coordinator.network.net import JOB, executor

E18 = 10**18


@pytest.fixture(scope="module")
def dn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """One devnet with one solver process; every process is killed at the end."""
    with devnet(
        tmp_path_factory.mktemp("devnet"), solvers=1, verifiers=0, referees=0, poll=0.3
    ) as d:
        yield d
    assert all(n.process.poll() is not None for n in d.nodes)
    assert d.anvil.process.poll() is not None


def test_a_task_runs_on_the_devnet_and_the_cli_shows_it(dn: Devnet, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    client = TaskClient(
        dn.protocol, dn.user, LocalStore(dn.store_path), executor(), workdir=tmp_path
    )
    spec = TaskSpec(entry="tiny_job:build", code=("tiny_job.py",), steps=4, batch_size=8, commit_interval=2,
                    budget=10 * E18, bond=E18, claim_window=600, work_window=600, reveal_window=600,
                    challenge_window=30)  # fmt: skip
    tid = client.submit(spec, {"tiny_job.py": JOB.read_bytes()})

    def move_time() -> None:
        time.sleep(0.3)
        if SlotState(dn.protocol.get_slot(tid, 0)["state"]) == SlotState.REVEALED:
            dn.client.advance_time(31)

    receipt = client.wait(tid, timeout=120, on_poll=move_time)
    assert receipt.outcome == "verified", [n.workdir for n in dn.nodes]
    assert all(n.alive for n in dn.nodes)
    path = client.fetch_result(tid, tmp_path / "final.safetensors")
    assert ree.load_checkpoint(path, expected_root=receipt.final_root).tree.leaves["ree/step"] == 4
    opts = ["-o", f"network.rpc_url={dn.rpc_url}", "-o", f"network.deployment={dn.deployment_path}",
            "-o", f"storage.path={dn.store_path}"]  # fmt: skip
    capsys.readouterr()
    assert gensyn([*opts, "task", "show", str(tid)]) == 0
    out = capsys.readouterr().out
    assert "PAID" in out
    assert "Paid" in out
    assert receipt.final_root in out
    assert gensyn([*opts, "task", "list"]) == 0
    assert "PAID" in capsys.readouterr().out
