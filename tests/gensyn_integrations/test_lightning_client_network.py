"""The client role on a configured network (a persistent devnet): re-attach, retries, failures, money."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gensyn_integrations import lightning_client_app as app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:FutureWarning"),
]

REPO = Path(__file__).parents[2]
PASSWORD = "correct horse"
QUIET: dict[str, Any] = {
    "accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
    "enable_checkpointing": False, "enable_model_summary": False,
}  # fmt: skip
DRIVER = """
import lightning.pytorch as pl
from tests.gensyn_integrations import lightning_client_app as app
from gensyn_integrations.lightning import GensynStrategy
pl.Trainer(strategy=GensynStrategy(seed=3), max_steps=8, accelerator="cpu", devices=1, logger=False,
           enable_progress_bar=False, enable_checkpointing=False).fit(app.TinyNet(), app.TinyData())
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    """A `gensyn devnet`-style network that outlives clients, and the GENSYN_* environment naming it."""
    from coordinator.accounts import import_account
    from coordinator.devnet import devnet

    root = tmp_path_factory.mktemp("persistent-devnet")
    with devnet(root, solvers=1, verifiers=0, referees=0, frameworks=("torch", "lightning")) as dn:
        ks = root / "keystore"
        import_account(dn.user.key.hex(), PASSWORD, alias="client", keystore=ks, scrypt_n=2**4)
        env = {
            "GENSYN_NETWORK__RPC_URL": dn.rpc_url, "GENSYN_NETWORK__DEPLOYMENT": str(dn.deployment_path),
            "GENSYN_NETWORK__KEYSTORE": str(ks), "GENSYN_STORAGE__PATH": str(dn.store_path),
            "GENSYN_PASSWORD": PASSWORD,
        }  # fmt: skip
        yield dn, env


def _config(env: dict[str, str]) -> Any:
    from gensyn_integrations.config import load_config

    return load_config(env=env)


def test_a_fresh_strategy_re_attaches_to_a_task_whose_client_process_died(
    net: tuple[Any, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning.pytorch as pl

    from gensyn_integrations.lightning import GensynStrategy

    dn, env = net
    before = dn.protocol.task_count()
    tid = None
    with subprocess.Popen(  # noqa: S603 - our interpreter, our driver
        [sys.executable, "-c", DRIVER], cwd=REPO, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"posted task (\d+)", line)
            if m:
                tid = int(m.group(1))
                break
        proc.kill()  # the client dies right after posting
    assert tid is not None
    assert dn.protocol.task_count() == before + 1  # it went to the configured network, not an embedded one

    executor = GensynStrategy(role="executor", seed=3)
    local = app.TinyNet()
    pl.Trainer(strategy=executor, max_steps=8, **QUIET).fit(local, app.TinyData())

    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)  # read the way the CLI reads it
    strategy = GensynStrategy(task_id=tid, config=_config(env))
    remote = app.TinyNet()
    pl.Trainer(strategy=strategy, max_steps=8, **QUIET).fit(remote, app.TinyData())
    r = strategy.receipt
    assert (r.task_id, r.outcome, r.verified) == (tid, "verified", True)
    assert r.final_root == executor.trace.roots[-1]
    assert len(r.losses) == 8
    for k, v in local.state_dict().items():
        assert (remote.state_dict()[k] == v).all(), k


def test_an_expired_task_is_posted_again_and_the_refunds_stay_credit(
    net: tuple[Any, dict[str, str]], tmp_path: Path
) -> None:
    import lightning.pytorch as pl

    from coordinator.storage import LocalStore
    from gensyn_integrations._lightning.client import build_job
    from gensyn_integrations._network import Network
    from gensyn_integrations._remote import RemoteTaskError, run_remote
    from gensyn_integrations.lightning import GensynStrategy

    dn, _ = net
    spec, files = build_job(GensynStrategy(seed=3), pl.Trainer(max_steps=2, **QUIET), app.TinyNet(), None,
                            app.TinyData())  # fmt: skip
    # no solver has this fingerprint, so nobody claims and the slot expires after its claim window
    spec = dataclasses.replace(spec, fingerprint="00" * 32, claim_window=2)
    network = Network(dn.protocol, dn.user, LocalStore(dn.store_path), dn.rpc_url)
    me = dn.user.address
    funds = dn.protocol.balance_of(me) + dn.protocol.credit(me)
    credit = dn.protocol.credit(me)
    with pytest.raises(RemoteTaskError) as info:
        run_remote(spec, files, frameworks=("lightning",), network=network, retries=1, timeout=120)
    e = info.value
    assert e.outcome == "refunded"
    assert "after 2 tries (retries=1)" in str(e)
    assert "`gensyn withdraw`" in str(e)
    assert "2 AI" in str(e)  # both escrows came back
    assert dn.protocol.credit(me) == credit + 2 * spec.budget
    assert dn.protocol.balance_of(me) + dn.protocol.credit(me) == funds  # no money lost


def test_a_failed_task_shows_the_remote_traceback_and_its_steps_reach_the_loggers(
    net: tuple[Any, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from gensyn_integrations._remote import RemoteTaskError
    from gensyn_integrations.lightning import GensynStrategy

    _, env = net
    monkeypatch.setenv("GENSYN_PASSWORD", PASSWORD)
    strategy = GensynStrategy(seed=3, config=_config(env))
    logger = CSVLogger(tmp_path, name="failed")
    trainer = pl.Trainer(strategy=strategy, max_steps=6, log_every_n_steps=1,
                         **{**QUIET, "logger": logger})  # fmt: skip
    with pytest.raises(RemoteTaskError) as info:
        trainer.fit(app.FailingNet(fail_at=4), app.TinyData())
    e = info.value
    assert e.outcome == "failed"
    assert "ValueError: boom at step 4" in e.traceback
    assert "boom at step 4" in str(e)
    assert "`gensyn withdraw`" in str(e)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("loss")]
    assert steps == [0, 1, 2]  # the three steps before the failing one
