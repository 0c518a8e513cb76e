"""``GensynTrainer(role="client")``: ``train()`` on the embedded devnet, the executor plugin, and what cannot ship.

The remote run must equal a local ``GensynTrainer(role="executor")`` run bit for
bit (device mode): every tensor of the state dict, and the final root.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from gensyn_integrations.errors import ConfigError
from tests.gensyn_integrations.hf import client_app as app


def _bundle(files: dict[str, bytes], where: Path) -> Path:
    where.mkdir()
    for name, data in files.items():
        (where / name).write_bytes(data)
    return where


@pytest.mark.slow
def test_remote_train_returns_verified_weights_equal_to_a_local_executor_run(
    tmp_path: Path,
) -> None:
    eval_ds = app.Tokens(n=8, seed=9)
    # 5 batches an epoch, roots every 3 steps: the solver's two segments meet mid-epoch
    local = app.trainer(str(tmp_path / "local"), commit_interval=3)
    local.train()
    trace = local.gensyn_callback.trace
    assert trace.steps == [0, 3, 6]

    client = app.trainer(str(tmp_path / "client"), role="client", commit_interval=3)
    before = {k: v.clone() for k, v in client.model.state_dict().items()}
    out = client.train()

    r = client.receipt
    assert r.verified
    assert r.outcome == "verified"
    assert r.final_root == trace.roots[-1]
    assert r.steps == 6
    assert r.task_id >= 1
    assert r.transactions
    assert r.spec_cid
    assert r.result_cids[0]
    assert len(r.solvers) == 1
    assert r.cost > r.fee_burned > 0
    assert out.global_step == client.state.global_step == 6
    assert out.metrics["gensyn_task_id"] == r.task_id
    # each remote step's logged numbers went through trainer.log (the Trainer's loggers)
    logged = {h["step"]: h for h in client.state.log_history if "loss" in h}
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    assert all("learning_rate" in h for h in logged.values())
    assert r.losses == [logged[s]["loss"] for s in range(1, 7)]
    assert out.training_loss == pytest.approx(sum(r.losses) / 6)
    want, got = local.model.state_dict(), client.model.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert any(not torch.equal(before[k], got[k]) for k in got)  # the weights did come back trained
    # evaluate() runs here, on the returned weights
    got_eval = client.evaluate(eval_dataset=eval_ds)["eval_loss"]
    assert got_eval == local.evaluate(eval_dataset=eval_ds)["eval_loss"]


@pytest.mark.slow
def test_the_executor_runs_segments_a_referee_step_and_a_verifier_interval_to_the_local_roots(
    tmp_path: Path,
) -> None:
    from coordinator.tasks import RunRequest
    from gensyn_integrations._hf.ship import build_job
    from plugins.hf_executor import gensyn_verify_interval, run_transformers

    local = app.trainer(str(tmp_path / "local"), commit_interval=1, max_steps=4)
    local.train()
    roots = local.gensyn_callback.trace.roots
    spec, files = build_job(
        app.trainer(str(tmp_path / "c"), role="client", commit_interval=1, max_steps=4)
    )
    bundle = _bundle(files, tmp_path / "bundle")

    start = run_transformers(RunRequest(spec, bundle, tmp_path / "s0", end_step=0))
    assert start.trace.roots == roots[:1]
    assert sorted(start.checkpoints) == [0]
    first = run_transformers(
        RunRequest(spec, bundle, tmp_path / "s1", end_step=2, checkpoint_every=2)
    )
    assert first.trace.steps == [0, 1, 2]
    assert sorted(first.checkpoints) == [0, 2]
    assert len(first.losses) == 2
    second = run_transformers(RunRequest(spec, bundle, tmp_path / "s2", start_checkpoint=first.checkpoints[2],
                                         start_step=2, end_step=4))  # fmt: skip
    assert first.trace.roots + second.trace.roots[1:] == roots
    assert second.final_root == roots[4]
    # a referee's single step from a mid-run checkpoint, and a verifier's interval
    step = run_transformers(RunRequest(spec, bundle, tmp_path / "r", start_checkpoint=first.checkpoints[2],
                                       start_step=2, end_step=3, root_every=1))  # fmt: skip
    assert step.trace.roots == roots[2:4]
    req = RunRequest(spec, bundle, tmp_path / "v")
    assert (
        gensyn_verify_interval(req, start.checkpoints[0], 0, 2, tmp_path / "v0", None) == roots[2]
    )
    assert gensyn_verify_interval(RunRequest(spec.__class__(entry="x:y"), bundle, tmp_path), start.checkpoints[0],
                                  0, 1, tmp_path / "v1", None) is None  # fmt: skip
    # the REE's process-wide settings are undone after every run
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_model_class_from_a_source_file_ships_and_its_failure_is_committed(
    tmp_path: Path,
) -> None:
    from coordinator.tasks import RunRequest, failure_digest
    from gensyn_integrations._hf.ship import build_job
    from plugins.hf_executor import run_transformers

    bomb = app.Bomb(app.model().config)
    spec, files = build_job(_client(tmp_path / "c", model=bomb))
    assert spec.code == ("client_app.py",)
    assert spec.init_args["model"]["class"] == {"file": "client_app.py", "qualname": "Bomb"}
    assert spec.init_args["model"]["config_class"] == {"transformers": "GPT2Config"}
    res = run_transformers(
        RunRequest(spec, _bundle(files, tmp_path / "b"), tmp_path / "o", end_step=4)
    )
    assert res.failed
    assert res.steps_done == 2
    assert res.error_type == "ValueError"
    assert "boom in the third forward" in res.traceback
    assert res.final_root == res.trace.roots[-1] == failure_digest(3)
    assert res.trace.steps == [0, 2]
    assert not torch.are_deterministic_algorithms_enabled()  # the REE's settings were undone


# ---------------------------------------------------------------------- what cannot ship


def _job(tmp_path: Path, **kw: Any) -> Any:
    from gensyn_integrations._hf.ship import build_job

    return build_job(app.trainer(str(tmp_path), role="client", **kw))


def test_the_job_holds_the_model_by_name_its_weights_the_data_and_the_result_changing_args(
    tmp_path: Path,
) -> None:
    from safetensors.torch import load

    spec, files = _job(tmp_path, gradient_accumulation_steps=2, max_grad_norm=0.5, logging_steps=3)
    assert spec.framework == "transformers"
    assert spec.code == ()  # GPT2LMHeadModel travels by name
    assert spec.init_args["model"]["class"] == {"transformers": "GPT2LMHeadModel"}
    assert spec.init_args["model"]["attn_implementation"] == "eager"
    assert (spec.steps, spec.batch_size, spec.accumulation, spec.clip_norm, spec.seed) == (
        6,
        4,
        2,
        0.5,
        5,
    )
    assert spec.init_args["args"]["learning_rate"] == 1e-2
    assert "logging_steps" not in spec.init_args["args"]  # a setting of this machine
    data = load(files[spec.data[0]])
    assert torch.equal(data["input_ids"], app.Tokens().data)
    assert spec.precision == "fp32"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_steps": -1, "num_train_epochs": 1}, r"fixed number of optimizer steps.*max_steps=N"),
        (
            {"eval_strategy": "steps", "eval_steps": 2, "eval_dataset": app.Tokens(n=4)},
            r"eval_strategy='no'.*evaluate\(\) after train",
        ),
        ({"neftune_noise_alpha": 5.0}, r"neftune_noise_alpha=5\.0.*leave them at their defaults"),
    ],
)
def test_training_arguments_the_executor_does_not_run_are_refused(
    tmp_path: Path, kw: dict[str, Any], match: str
) -> None:
    from gensyn_integrations._hf.ship import ShipError

    with pytest.raises(ShipError, match=match):
        _job(tmp_path, **kw)  # eval_dataset goes to the Trainer, the rest to its arguments


class _Noisy(app.Tokens):
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = super().__getitem__(i)["input_ids"]
        x = x.roll(random.randint(0, 7))  # noqa: S311 - augmentation, not security
        return {"input_ids": x, "labels": x.clone()}


class _Text(Dataset[dict[str, Any]]):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"text": "hello"}


def _client(tmp_path: Path, **kw: Any) -> Any:
    from transformers.data.data_collator import default_data_collator

    from gensyn_integrations.transformers import GensynCallback, GensynTrainer

    parts: dict[str, Any] = {"model": app.model(), "args": app.args(str(tmp_path)),
                             "train_dataset": app.Tokens(), "data_collator": default_data_collator,
                             "callbacks": [GensynCallback(role="client", commit_interval=2, threads=1)]}  # fmt: skip
    parts.update(kw)
    return GensynTrainer(**parts)


def test_what_cannot_ship_gets_an_error_that_says_how_to_fix_it(tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from gensyn_integrations._hf.ship import ShipError, build_job
    from gensyn_integrations.transformers import GensynTrainer

    class Local(type(app.model())):  # type: ignore[misc]
        pass

    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": Local(app.model().config)}, r"inside a function.*top level of a \.py file"),
        ({"model": torch.nn.Linear(2, 2)}, r"not a transformers PreTrainedModel"),
        ({"train_dataset": _Noisy()}, r"example 0 differs between epochs"),
        ({"train_dataset": _Text()}, r"'text'.*tokenise text first"),
        ({"data_collator": lambda b: b}, r"<lambda> has no form.*default_data_collator"),
        ({"compute_loss_func": lambda *a, **k: 0}, r"compute_loss_func.*outputs\.loss"),
    ]
    for kw, match in cases:
        with pytest.raises(ShipError, match=match):
            build_job(_client(tmp_path, **kw))

    class Stop(TrainerCallback):  # type: ignore[misc]
        pass

    t = _client(tmp_path)
    t.add_callback(Stop())
    with pytest.raises(ShipError, match=r"\['Stop'\] may change training"):
        build_job(t)

    class Custom(GensynTrainer):
        pass

    with pytest.raises(ShipError, match=r"Custom subclasses GensynTrainer"):
        build_job(Custom(model=app.model(), args=app.args(str(tmp_path)), train_dataset=app.Tokens(),
                         role="client"))  # fmt: skip
    Repl = type("Repl", (type(app.model()),), {"__module__": "__main__"})  # as a notebook makes it
    with pytest.raises(ShipError, match=r"no source file.*__main__ of a notebook"):
        build_job(_client(tmp_path, model=Repl(app.model().config)))


def test_roles_are_chosen_once_and_the_client_role_never_trains_here(tmp_path: Path) -> None:
    from transformers import Trainer

    from gensyn_integrations.transformers import GensynCallback, GensynTrainer

    t = _client(tmp_path)
    assert t.role == "client"
    with pytest.raises(ConfigError, match=r"resume_from_checkpoint is not sent"):
        t.train(resume_from_checkpoint="somewhere")
    with pytest.raises(ConfigError, match=r"role='executor'\) got GensynCallback\(role='client'\)"):
        GensynTrainer(model=app.model(), args=app.args(str(tmp_path)), train_dataset=app.Tokens(),
                      role="executor", callbacks=[GensynCallback(role="client")])  # fmt: skip
    plain = Trainer(model=app.model(), args=app.args(str(tmp_path)), train_dataset=app.Tokens(),
                    callbacks=[GensynCallback(role="client", commit_interval=1, threads=1)])  # fmt: skip
    with pytest.raises(ConfigError, match=r"about to train here.*GensynTrainer"):
        plain.train()
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_recipe_ships_as_it_is_with_remote(tmp_path: Path) -> None:
    import importlib.util

    from gensyn_integrations._hf.ship import build_job

    path = Path(__file__).resolve().parents[3] / "recipes" / "hf_tiny_gpt2.py"
    spec = importlib.util.spec_from_file_location("hf_tiny_gpt2", path)
    assert spec is not None
    assert spec.loader is not None
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    trainer, callback = recipe.build(str(tmp_path), max_steps=4, commit_interval=2, remote=True)
    assert trainer.role == callback.role == "client"
    task, files = build_job(trainer)
    assert (task.steps, task.commit_interval, task.init_args["args"]["warmup_steps"]) == (4, 2, 2)
    assert task.data[0] in files


class _Posted(Exception):  # noqa: N818 - a stand-in for the network, never shown to a user
    """What the fake ``run_remote`` raises once it has seen its arguments."""


def _fake_road(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand in for the network: ``run_remote`` keeps its arguments and stops the call."""
    import gensyn_integrations._remote as remote

    seen: dict[str, Any] = {}

    def run_remote(spec: Any, files: Any, **kw: Any) -> Any:
        seen.clear()
        seen.update(spec=spec, files=files, **kw)
        raise _Posted

    monkeypatch.setattr(remote, "run_remote", run_remote)
    return seen


def test_the_client_role_takes_task_id_retries_and_config_as_the_strategy_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gensyn_integrations.config import GensynConfig

    seen = _fake_road(monkeypatch)
    cfg = GensynConfig()
    t = _client(tmp_path, retries=2, config=cfg)
    with pytest.raises(_Posted):
        t.train()
    assert seen["spec"].framework == "transformers"
    assert seen["files"]
    assert (seen["retries"], seen["task_id"], seen["config"]) == (2, None, cfg)
    seen["on_posted"](9)
    assert t.task_id_posted == 9
    assert "re-attach with GensynTrainer(..., role='client', task_id=9)" in capsys.readouterr().err

    class Local(type(app.model())):  # type: ignore[misc]  # cannot ship: proves nothing is built
        pass

    again = _client(tmp_path, model=Local(app.model().config), task_id=7, config=cfg)
    with pytest.raises(_Posted):
        again.train()
    assert (seen["spec"], seen["files"], seen["task_id"], seen["retries"]) == (None, {}, 7, 0)


def test_a_re_attached_task_must_train_the_same_model_class(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from gensyn_integrations._hf.client import _check_reattach

    t = _client(tmp_path, task_id=7)
    ours = {"model": {"class": {"transformers": "GPT2LMHeadModel"}}}
    _check_reattach(t, SimpleNamespace(framework="transformers", init_args=ours))
    other = {"model": {"class": {"file": "net.py", "qualname": "MyNet"}}}
    with pytest.raises(ConfigError, match=r"task 7 trains 'MyNet', not GPT2LMHeadModel"):
        _check_reattach(t, SimpleNamespace(framework="transformers", init_args=other))
    with pytest.raises(ConfigError, match=r"task 7 trains 'lightning'"):
        _check_reattach(t, SimpleNamespace(framework="lightning", init_args={}))


def test_task_id_without_a_configured_network_says_what_to_configure(tmp_path: Path) -> None:
    from gensyn_integrations.config import GensynConfig

    t = _client(tmp_path, task_id=5, config=GensynConfig())
    with pytest.raises(ConfigError, match=r"GensynTrainer\(role='client'\): task_id=5.*network\.rpc_url.*keystore"):
        t.train()
    assert t.receipt is None
    assert t.task_id_posted is None


def test_client_settings_are_checked_when_the_trainer_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"retries=-1\) must be 0 or more"):
        _client(tmp_path, retries=-1)
    with pytest.raises(ConfigError, match=r"a dry run prices a new task"):
        _client(tmp_path, task_id=3, dry_run=True)
    with pytest.raises(ConfigError, match=r"settings of the client role's task.*Pass role='client'"):
        _client(tmp_path, callbacks=[], role="executor", task_id=3)


@pytest.mark.slow  # a subprocess that imports transformers: no devnet, but seconds
def test_a_dry_run_prices_the_task_and_runs_step_one_in_a_clean_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _fake_road(monkeypatch)
    t = _client(tmp_path, dry_run=True)
    out = t.train()
    assert not seen  # nothing was posted
    est = t.estimate
    assert est.steps == t.args.max_steps
    assert est.escrow == t.budget
    assert est.first_loss is not None
    assert est.first_loss > 0
    assert out.global_step == 0
    assert out.training_loss == est.first_loss
    assert "Nothing was paid and no chain was touched" in capsys.readouterr().out
    assert t.receipt is None


@pytest.mark.slow
def test_on_a_configured_network_a_fresh_trainer_re_attaches_to_a_posted_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `gensyn devnet`-style network named by config: the task goes there, and task_id finds it again."""
    from coordinator.accounts import import_account
    from coordinator.devnet import devnet
    from gensyn_integrations.config import load_config

    password = "correct horse"
    with devnet(tmp_path / "net", solvers=1, verifiers=0, referees=0,
                frameworks=("torch", "transformers")) as dn:  # fmt: skip
        ks = tmp_path / "keystore"
        import_account(dn.user.key.hex(), password, alias="client", keystore=ks, scrypt_n=2**4)
        env = {
            "GENSYN_NETWORK__RPC_URL": dn.rpc_url, "GENSYN_NETWORK__DEPLOYMENT": str(dn.deployment_path),
            "GENSYN_NETWORK__KEYSTORE": str(ks), "GENSYN_STORAGE__PATH": str(dn.store_path),
        }  # fmt: skip
        monkeypatch.setenv("GENSYN_PASSWORD", password)
        before = dn.protocol.task_count()
        first = _client(tmp_path / "a", config=load_config(env=env))
        first.train()
        r = first.receipt
        assert dn.protocol.task_count() == before + 1  # the configured network, not an embedded one
        assert first.task_id_posted == r.task_id

        again = _client(tmp_path / "b", task_id=r.task_id, config=load_config(env=env))
        out = again.train()
        assert dn.protocol.task_count() == before + 1  # nothing new was posted
        assert again.task_id_posted is None
        assert (again.receipt.task_id, again.receipt.final_root) == (r.task_id, r.final_root)
        assert out.global_step == r.steps
        want, got = first.model.state_dict(), again.model.state_dict()
        for k in want:
            assert torch.equal(want[k], got[k]), k
