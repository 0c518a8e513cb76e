"""The client role of ``GensynStrategy``: ``fit`` on the embedded devnet, and what cannot be shipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.gensyn_integrations import lightning_client_app as app

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch"),
]

QUIET: dict[str, Any] = {
    "accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
    "enable_checkpointing": False, "enable_model_summary": False,
}  # fmt: skip


@pytest.mark.slow
def test_remote_fit_returns_verified_weights_and_streams_losses_to_the_bar_and_loggers(tmp_path: Path) -> None:
    """One remote fit: verified weights equal a local run's; the CSVLogger holds the remote losses bit for bit."""
    import csv

    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from coordinator.tasks import RunRequest
    from gensyn_integrations._lightning.client import build_job
    from gensyn_integrations.lightning import GensynStrategy
    from plugins.lightning_executor import run_lightning

    local, remote = app.TinyNet(), app.TinyNet()
    executor = GensynStrategy(role="executor", seed=3)
    pl.Trainer(strategy=executor, max_steps=8, **QUIET).fit(local, app.TinyData())
    # the executor's own losses: what a solver's run of this job reports, step by step
    spec, files = build_job(GensynStrategy(seed=3), pl.Trainer(max_steps=8, **QUIET), app.TinyNet(), None,
                            app.TinyData())  # fmt: skip
    bundle = _unpack(files, tmp_path / "bundle")
    ran = run_lightning(RunRequest(spec, bundle, tmp_path / "run", end_step=8))

    strategy = GensynStrategy(seed=3, config=_no_network())
    bar = TQDMProgressBar()
    loud = {**QUIET, "enable_progress_bar": True, "logger": CSVLogger(tmp_path / "logs", name="remote")}
    trainer = pl.Trainer(strategy=strategy, max_steps=8, log_every_n_steps=1, callbacks=[bar], **loud)
    trainer.fit(remote, app.TinyData())

    r = strategy.receipt
    assert r.verified
    assert r.outcome == "verified"
    assert r.final_root == executor.trace.roots[-1]
    assert r.task_id >= 1
    assert r.transactions
    assert r.spec_cid
    assert r.result_cids[0]
    assert len(r.solvers) == 1
    assert r.cost > r.fee_burned > 0
    assert trainer.global_step == 8
    want, got = local.state_dict(), remote.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    # the remote losses, in the receipt and in the CSV, are the executor's floats exactly
    assert r.losses == ran.losses
    assert len(ran.losses) == 8
    with open(trainer.loggers[0].log_dir + "/metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("loss")]
    assert [int(row["step"]) for row in rows] == list(range(8))
    assert [float(row["loss"]) for row in rows] == ran.losses
    assert [float(row["train_mse"]) for row in rows] == ran.losses  # what self.log logged on each step
    assert bar.train_progress_bar.n == 8
    assert "loss=" in str(bar.train_progress_bar.postfix)
    assert float(trainer.callback_metrics["loss"]) == ran.losses[-1]
    # validate runs here, on the returned weights
    val = DataLoader(app.TinyData().ds, batch_size=8)
    assert trainer.validate(remote, val)[0]["val_loss"] == pytest.approx(
        pl.Trainer(**QUIET).validate(local, val)[0]["val_loss"], abs=0
    )


def _no_network() -> Any:
    from gensyn_integrations.config import GensynConfig

    return GensynConfig()  # whatever gensyn.yaml or GENSYN_* say here: the embedded devnet


def _unpack(files: dict[str, bytes], bundle: Path) -> Path:
    for name, data in files.items():
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_bytes(data)
    return bundle


def _fit_remote(model: Any, data: Any) -> None:
    import lightning.pytorch as pl

    from gensyn_integrations.lightning import GensynStrategy

    pl.Trainer(strategy=GensynStrategy(), max_steps=2, **QUIET).fit(model, data)


def test_a_module_defined_in_a_function_or_the_repl_gets_an_error_that_says_how_to_fix_it() -> None:
    from gensyn_integrations._lightning.client import ShipError

    class Local(app.TinyNet):
        pass

    with pytest.raises(ShipError, match=r"inside a function.*top level of a \.py file"):
        _fit_remote(Local(), app.TinyData())

    Repl = type("Repl", (app.TinyNet,), {"__module__": "__main__"})  # as `python -i` or a notebook makes it
    with pytest.raises(ShipError, match=r"no source file.*__main__ of a notebook or the REPL"):
        _fit_remote(Repl(), app.TinyData())


def test_a_lambda_collate_fn_gets_an_error_that_says_how_to_fix_it() -> None:
    from gensyn_integrations._lightning.client import ShipError

    ds = TensorDataset(torch.zeros(8, 4), torch.zeros(8, 1))
    loader = DataLoader(ds, batch_size=4, collate_fn=lambda b: b)
    with pytest.raises(ShipError, match=r"collate_fn is a lambda.*LightningDataModule"):
        _fit_remote(app.TinyNet(), loader)


def test_the_lightning_executor_resumes_segments_and_verifies_an_interval(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from coordinator.tasks import RunRequest
    from gensyn_integrations._lightning.client import build_job
    from gensyn_integrations.lightning import GensynStrategy
    from plugins.lightning_executor import gensyn_verify_interval, run_lightning

    executor = GensynStrategy(role="executor", seed=3, commit_interval=1)
    trainer = pl.Trainer(strategy=executor, max_steps=4, **QUIET)
    spec, files = build_job(GensynStrategy(seed=3, commit_interval=1), trainer, app.TinyNet(), None,
                            app.TinyData())  # fmt: skip
    trainer.fit(app.TinyNet(), app.TinyData())
    local = executor.trace.roots
    bundle = _unpack(files, tmp_path / "bundle")
    start = run_lightning(RunRequest(spec, bundle, tmp_path / "s0", end_step=0))
    assert start.trace.roots == local[:1]
    first = run_lightning(RunRequest(spec, bundle, tmp_path / "s1", end_step=2))
    second = run_lightning(RunRequest(spec, bundle, tmp_path / "s2", start_checkpoint=first.checkpoints[2],
                                      start_step=2, end_step=4))  # fmt: skip
    assert first.trace.roots + second.trace.roots[1:] == local
    assert sorted(second.checkpoints) == [2, 3, 4]
    assert len(first.losses) == 2
    req = RunRequest(spec, bundle, tmp_path / "v")
    assert gensyn_verify_interval(req, start.checkpoints[0], 0, 2, tmp_path / "v0", None) == local[2]
