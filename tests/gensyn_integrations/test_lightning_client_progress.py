"""The client role without a network: step metrics in run manifests, the bar and loggers, prices, the twin."""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.gensyn_integrations import lightning_client_app as app

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore::pytorch_lightning.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:FutureWarning"),
]

QUIET: dict[str, Any] = {
    "accelerator": "cpu", "devices": 1, "enable_checkpointing": False, "enable_model_summary": False,
}  # fmt: skip


def test_run_manifests_carry_step_metrics_and_manifests_without_them_still_load(tmp_path: Path) -> None:
    from coordinator.storage import LocalStore
    from coordinator.tasks import RunResult
    from coordinator.tasks._bundle import put_json
    from coordinator.tasks._results import RUN_FORMAT, load_run, publish_run
    from ree._trace import Trace

    store = LocalStore(tmp_path / "store")
    trace = Trace(commit_interval=1, steps=[0, 3], roots_raw=[b"\0" * 32, b"\1" * 32], final=True)
    m = publish_run(store, "bafyspec", RunResult(trace, {}, (b"\1" * 32).hex(), 3, losses=[2.5, 0.1, math.nan]))
    back = load_run(store, m.cid)
    assert back.metrics[1] == {"loss": 2.5}
    assert back.metrics[2] == {"loss": 0.1}
    assert math.isnan(back.metrics[3]["loss"])  # canonical JSON has no NaN: it travels as "nan"
    old = put_json(store, {"format": RUN_FORMAT, "spec": "bafyspec", "trace": trace.to_json(),
                           "failed": False, "checkpoints": []})  # fmt: skip
    assert load_run(store, old).metrics == {}


def test_an_executors_metrics_sidecar_reaches_the_manifest(tmp_path: Path) -> None:
    from coordinator.tasks import RunResult
    from coordinator.tasks._results import run_metrics, write_metrics
    from ree._trace import Trace

    write_metrics(tmp_path, {2: {"loss": 0.5, "acc": math.inf}, 1: {"loss": -math.inf}, 9: {"x": 1.0}})
    trace = Trace(commit_interval=1, steps=[0, 2], roots_raw=[b"\0" * 32, b"\1" * 32], final=True)
    got = run_metrics(RunResult(trace, {2: tmp_path / "step-2.safetensors"}, (b"\1" * 32).hex(), 2))
    assert got == {1: {"loss": -math.inf}, 2: {"loss": 0.5, "acc": math.inf}}  # step 9 is past the run


@pytest.mark.parametrize("bar", ["tqdm", "rich", "none"])
def test_remote_steps_move_the_progress_bar_and_reach_the_loggers(tmp_path: Path, bar: str) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from gensyn_integrations._lightning.progress import RemoteProgress

    cb = {"tqdm": [TQDMProgressBar()], "rich": [RichProgressBar()], "none": []}[bar]
    trainer = pl.Trainer(max_steps=3, logger=CSVLogger(tmp_path), log_every_n_steps=2, callbacks=cb,
                         enable_progress_bar=bar != "none", **QUIET)  # fmt: skip
    p = RemoteProgress(trainer, app.TinyNet(), 3)
    p.start(7)
    p.update(1, {1: {"loss": 0.5, "epoch": 0.0}})
    p.update(3, {2: {"loss": 0.25, "train_mse": 0.25}, 3: {"loss": 0.125}})
    p.update(3, {})
    p.close(True)
    with open(Path(trainer.loggers[0].log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # every 2nd step and the last one, at Lightning's own step numbers (optimizer step - 1)
    assert [(int(r["step"]), float(r["loss"])) for r in rows] == [(1, 0.25), (2, 0.125)]
    assert float(trainer.callback_metrics["loss"]) == 0.125
    if bar == "tqdm":
        assert cb[0].train_progress_bar.n == 3
        assert "loss=0.125" in str(cb[0].train_progress_bar.postfix)
        assert "Remote task 7" in str(cb[0].train_progress_bar.desc)
    elif bar == "rich":
        task = cb[0].progress.tasks[p.rich_task]
        assert task.completed == 3
        assert "Remote task 7" in task.description


def test_the_fee_the_estimate_uses_is_the_task_markets_default() -> None:
    from gensyn_integrations._remote import FEE_BPS

    src = (Path(__file__).parents[2] / "contracts" / "src" / "TaskMarket.sol").read_text()
    found = re.search(r"uint256 public feeBps = (\d+);", src)
    assert found is not None
    assert int(found.group(1)) == FEE_BPS


def _twin_job(policy: str = "replicate:1") -> tuple[Any, dict[str, bytes]]:
    import pytorch_lightning as ptl
    from pytorch_lightning.demos.boring_classes import BoringDataModule, BoringModel

    from gensyn_integrations._lightning.client import build_job
    from gensyn_integrations.pytorch_lightning import GensynStrategy

    strategy = GensynStrategy(seed=1, policy=policy, budget=10**18, bond=10**17)
    trainer = ptl.Trainer(strategy=strategy, max_steps=2, logger=False, enable_progress_bar=False, **QUIET)
    return build_job(strategy, trainer, BoringModel(), None, BoringDataModule())


def test_installed_classes_go_by_import_and_run_on_the_pytorch_lightning_twin(tmp_path: Path) -> None:
    from coordinator.tasks import RunRequest
    from plugins.lightning_executor import run_lightning

    spec, files = _twin_job()
    mod = "pytorch_lightning.demos.boring_classes"
    assert spec.init_args["module"] == {"import": mod, "qualname": "BoringModel", "hparams": {}}
    assert spec.init_args["datamodule"]["import"] == mod
    assert spec.code == ()
    assert not [n for n in files if n.endswith(".py")]  # nothing installed is shipped as source
    for name, data in files.items():
        (tmp_path / "b" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "b" / name).write_bytes(data)
    res = run_lightning(RunRequest(spec, tmp_path / "b", tmp_path / "out", end_step=2))
    assert res.steps_done == 2
    assert len(res.losses) == 2


def test_the_estimate_prices_every_solver_share_and_the_verifier_fees() -> None:
    from gensyn_integrations._remote import estimate

    spec, _ = _twin_job()
    e = estimate(dataclasses.replace(spec, policy="replicate:3"))
    share = 10**18 // 3
    assert e.replicas == 3
    assert e.escrow == 10**18
    assert e.fee_burned == 2 * (share * 50 // 10_000) + (10**18 - 2 * share) * 50 // 10_000
    assert e.solver_pay + e.fee_burned == 10**18
    s = estimate(dataclasses.replace(spec, policy="spot:2", verifier_fee=7))
    assert (s.spot_checks, s.verifier_fees, s.escrow) == (2, 14, 10**18 + 14)
    assert "0.5% protocol fee" in s.describe()


@pytest.mark.parametrize("flavour", ["lightning", "pytorch_lightning"])
def test_task_id_without_a_configured_network_says_what_to_configure(flavour: str) -> None:
    """Through each twin's Trainer.fit and the client launcher: nothing is posted, the error says what to set."""
    import importlib

    from gensyn_integrations.config import GensynConfig
    from gensyn_integrations.errors import ConfigError

    pl = importlib.import_module("lightning.pytorch" if flavour == "lightning" else "pytorch_lightning")
    GensynStrategy = importlib.import_module(f"gensyn_integrations.{flavour}").GensynStrategy  # noqa: N806
    boring = importlib.import_module(f"{pl.__name__}.demos.boring_classes")
    strategy = GensynStrategy(task_id=5, config=GensynConfig())
    trainer = pl.Trainer(strategy=strategy, max_steps=2, logger=False, enable_progress_bar=False, **QUIET)
    with pytest.raises(ConfigError, match=r"task_id=5.*network\.rpc_url.*GENSYN_NETWORK__RPC_URL.*keystore"):
        trainer.fit(boring.BoringModel(), boring.BoringDataModule())
    assert strategy.receipt is None


def test_a_task_still_running_at_the_timeout_says_where_its_escrow_is_and_how_to_re_attach() -> None:
    from types import SimpleNamespace

    from gensyn_integrations._remote import _unsettled

    protocol = SimpleNamespace(get_task=lambda tid: {"p": {"budget": 3 * 10**18}})
    account = SimpleNamespace(address="0x" + "ab" * 20)
    real = SimpleNamespace(protocol=protocol, account=account, embedded=False)
    msg = _unsettled(real, 5, 60, "GensynStrategy(role='client')")
    assert "task 5 is not settled after 60s" in msg
    assert "escrow (3 AI) stays in the task market" in msg
    assert "GensynStrategy(task_id=5)" in msg
    assert "`gensyn task cancel 5`, then `gensyn withdraw`" in msg
    assert "GensynTrainer(task_id=5)" in _unsettled(real, 5, 60, "GensynTrainer(role='client')")
    assert "gensyn launch --remote --task-id 5" in _unsettled(real, 5, 60, "gensyn launch --remote")
    embedded = _unsettled(SimpleNamespace(**{**vars(real), "embedded": True}), 5, 60, "x")
    assert "embedded devnet stops with this call" in embedded
    assert "test tokens" in embedded
