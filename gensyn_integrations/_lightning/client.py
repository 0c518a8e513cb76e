"""The client role of ``GensynStrategy``: a launcher that sends ``fit`` to the network.

Lightning runs every Trainer entry point through ``strategy.launcher.launch(fn,
*args, trainer=...)`` (NOTES.md, Lightning: "the supported seam is the
launcher"). For ``fit`` this launcher does not call ``fn``. It ships the code
instead (the source file defining the LightningModule's class, and the
datamodule's; or a ``TensorDataset`` DataLoader as safetensors), the module's
current weights, and a ``TaskSpec`` with ``framework="lightning"``. Then it posts
the task, waits for it to settle, downloads the final REE checkpoint (checked
against the root committed on chain) and loads its ``model/`` leaves into the
user's module. ``validate``, ``test`` and ``predict`` run here, on those weights.

With no network configured it starts the embedded devnet for the call and moves
its chain time past the challenge window, as ``recipes/torch_regression.py`` does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from gensyn_integrations._lightning.ship import CodeCollector, ShipError, fix, source_of
from gensyn_integrations._remote import RemoteReceipt
from gensyn_integrations.errors import ConfigError

__all__ = ["ClientLauncher", "LightningReceipt", "ShipError", "build_job", "class_ref", "fit_remote"]

ENTRY = "plugins.lightning_executor:build_shipped"
FRAMEWORK = "lightning"
WEIGHTS_FILE = "gensyn_weights.safetensors"
DATA_FILE = "gensyn_data.safetensors"
_PRECISIONS = {"32-true": "fp32", "32": "fp32", "64-true": "fp64", "64": "fp64"}


@dataclass
class LightningReceipt(RemoteReceipt):
    """What a remote ``fit`` bought (:class:`RemoteReceipt`), with the remote losses and step metrics."""

    losses: list[float] = field(default_factory=list)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)


_fix = fix


def class_ref(obj: Any, what: str, code: CodeCollector | None = None) -> dict[str, Any]:
    """How the executor finds ``type(obj)`` (``{file|module|import, qualname, hparams}``); its source goes in ``code``.

    Raises :class:`ShipError` for classes without a source file (a notebook cell, the
    REPL), classes defined inside a function, and modules whose constructor
    arguments were not saved with ``save_hyperparameters()``.
    """
    import inspect

    cls = type(obj)
    name = cls.__qualname__
    source_of(cls, what)
    hparams = dict(getattr(obj, "hparams", {}) or {})
    required = [
        p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]  # fmt: skip
    missing = [p for p in required if p not in hparams]
    if missing:
        raise _fix(what, f"{name}({', '.join(missing)}) needs arguments the network cannot see",
                   "call self.save_hyperparameters() in its __init__ (plain JSON values only)")  # fmt: skip
    where = (code if code is not None else CodeCollector()).add_class(cls, what)
    return {**where, "qualname": name, "hparams": hparams}


def _loader_data(loader: Any) -> tuple[dict[str, Any], bytes]:
    from safetensors.torch import save
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset
    from torch.utils.data.dataloader import default_collate

    how = "pass a LightningDataModule defined in a .py file (its class travels as source)"
    if not isinstance(loader, DataLoader):
        raise _fix("the training data", f"it is a {type(loader).__name__}, not a DataLoader", how)
    if not isinstance(loader.dataset, TensorDataset):
        raise _fix("the training data", f"its dataset is a {type(loader.dataset).__name__}, and "
                   "only a TensorDataset can be materialised", how)  # fmt: skip
    if loader.collate_fn is not default_collate:
        fn = getattr(loader.collate_fn, "__name__", type(loader.collate_fn).__name__)
        kind = "a lambda" if fn == "<lambda>" else f"{fn}"
        raise _fix("the training data", f"its collate_fn is {kind}, which has no source to ship", how)
    if loader.batch_size is None:
        raise _fix("the training data", "it has a custom batch_sampler", how)
    cols = {f"t{i}": t.detach().contiguous() for i, t in enumerate(loader.dataset.tensors)}
    meta = {"file": DATA_FILE, "batch_size": loader.batch_size,
            "shuffle": isinstance(loader.sampler, RandomSampler), "drop_last": loader.drop_last}  # fmt: skip
    return meta, save(cols)


def _is_datamodule(obj: Any) -> bool:
    return obj is not None and any(c.__name__ == "LightningDataModule" for c in type(obj).__mro__)


def build_job(strategy: Any, trainer: Any, model: Any, train: Any, datamodule: Any) -> tuple[Any, dict[str, bytes]]:
    """The TaskSpec and the files of a remote ``fit``; raises :class:`ShipError` for what cannot travel."""
    from safetensors.torch import save

    from coordinator.tasks import TaskSpec

    if _is_datamodule(train):
        train, datamodule = None, train
    if trainer.max_steps is None or trainer.max_steps <= 0:
        raise ConfigError("a remote fit runs a fixed number of optimizer steps; pass Trainer(max_steps=N)",
                          key="max_steps", source="Trainer(...)")  # fmt: skip
    precision = _PRECISIONS.get(str(trainer.precision))
    if precision is None:
        raise ConfigError(f"Trainer(precision={trainer.precision!r}) does not run on the network yet; "
                          "use '32-true' or '64-true'", key="precision", source="Trainer(...)")  # fmt: skip
    if trainer.gradient_clip_val and str(trainer.gradient_clip_algorithm) not in ("norm", "GradClipAlgorithmType.NORM"):
        raise ConfigError("only gradient_clip_algorithm='norm' runs on the network",
                          key="gradient_clip_algorithm", source="Trainer(...)")  # fmt: skip
    code = CodeCollector()
    mref = class_ref(model, "the LightningModule", code)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    files: dict[str, bytes] = {WEIGHTS_FILE: save(state)}
    args: dict[str, Any] = {"module": mref, "weights": WEIGHTS_FILE}
    if datamodule is not None:
        args["datamodule"] = class_ref(datamodule, "the LightningDataModule", code)
    elif train is not None:
        meta, data = _loader_data(train)
        files[DATA_FILE] = data
        args["loader"] = meta
    else:
        raise ConfigError("fit() got no training data; pass a datamodule or a train DataLoader",
                          key="train_dataloaders", source="Trainer.fit(...)")  # fmt: skip
    clash = sorted(set(code.files) & set(files))
    if clash:
        raise _fix("the job", f"a source file is named like a bundle file ({clash[0]!r})", "rename it")
    files.update(code.files)
    top = tuple(sorted(n for n in code.files if "/" not in n))  # spec.code: plain names in the root
    s = strategy
    spec = TaskSpec(
        entry=ENTRY, code=top, framework=FRAMEWORK, init_args=args, steps=int(trainer.max_steps),
        batch_size=1, accumulation=int(trainer.accumulate_grad_batches),
        clip_norm=float(trainer.gradient_clip_val) if trainer.gradient_clip_val else None,
        precision=precision, seed=s.seed, ree_mode=s.mode, commit_interval=s.commit_interval,
        policy=s.policy, budget=s.budget, bond=s.bond, claim_window=600, work_window=600,
        reveal_window=600, challenge_window=s.challenge_window,
    )  # fmt: skip
    return spec, files


class ClientLauncher:
    """Runs ``fit`` on the network and every other Trainer entry point here."""

    def __init__(self, strategy: Any) -> None:
        """Launch for ``strategy`` (a client-role ``GensynStrategy``)."""
        self.strategy = strategy

    @property
    def is_interactive_compatible(self) -> bool:
        """Notebooks may call it: nothing is forked here."""
        return True

    def kill(self, signum: Any) -> None:
        """Nothing runs in a local child process; the remote task settles on its own."""

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        """Send ``fit`` to the network (or price it, for ``dry_run``); run anything else locally."""
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        if trainer is None or str(getattr(fn, "value", fn)) != "fit":
            return function(*args, **kwargs)
        model, train, _val, datamodule = (list(args) + [None] * 4)[:4]
        model = kwargs.get("model", model)
        train = kwargs.get("train_dataloaders", train)
        datamodule = kwargs.get("datamodule", datamodule)
        if self.strategy.dry_run:
            self.strategy.estimate = dry_run_fit(self.strategy, trainer, model, train, datamodule)
        else:
            self.strategy.receipt = fit_remote(self.strategy, trainer, model, train, datamodule)
        status = type(trainer.state.status)
        trainer.state.status = status.FINISHED
        return None


def dry_run_fit(strategy: Any, trainer: Any, model: Any, train: Any, datamodule: Any) -> Any:
    """Build the bundle, run its step 1 in a clean subprocess, print and return the estimate."""
    from gensyn_integrations._remote import dry_run

    spec, files = build_job(strategy, trainer, model, train, datamodule)
    est = dry_run(spec, files, timeout=strategy.timeout)
    print(est.describe())  # noqa: T201 - the dry run's whole point is to tell the person
    return est


def _check_reattach(strategy: Any, model: Any, spec: Any) -> None:
    want = dict(spec.init_args.get("module") or {}).get("qualname")
    if spec.framework != FRAMEWORK or want != type(model).__qualname__:
        raise ConfigError(
            f"task {strategy.task_id} trains {want or spec.framework!r}, not {type(model).__qualname__}; "
            "re-attach with the module class that posted it", key="task_id", source="GensynStrategy(...)",
        )  # fmt: skip


def fit_remote(strategy: Any, trainer: Any, model: Any, train: Any, datamodule: Any) -> LightningReceipt:
    """Ship, post, wait, fetch, check and load: the whole remote ``fit`` (:func:`run_remote`).

    With ``strategy.task_id`` set, nothing is shipped: it re-attaches to that task.
    """
    import torch

    from gensyn_integrations._lightning.progress import RemoteProgress
    from gensyn_integrations._remote import run_remote

    spec, files = (None, {}) if strategy.task_id is not None else build_job(
        strategy, trainer, model, train, datamodule)  # fmt: skip
    total = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else 0
    progress = RemoteProgress(trainer, model, total or (spec.steps if spec is not None else 0))
    progress.start(strategy.task_id)

    def posted(tid: int) -> None:
        strategy.task_id_posted = tid
        print(f"gensyn: posted task {tid}; if this process stops, re-attach with "  # noqa: T201
              f"GensynStrategy(task_id={tid}) on the same network", file=sys.stderr, flush=True)  # fmt: skip
        if progress.bar is not None and hasattr(progress.bar, "set_description"):
            progress.bar.set_description(f"Remote task {tid}")

    ok = False
    try:
        res = run_remote(spec, files, frameworks=("torch", FRAMEWORK), timeout=strategy.timeout,
                         config=strategy.config, task_id=strategy.task_id, retries=strategy.retries,
                         on_progress=progress.update, on_posted=posted)  # fmt: skip
        if strategy.task_id is not None:
            _check_reattach(strategy, model, res.spec)
        ok = True
    finally:
        progress.close(ok)
    with torch.no_grad():
        model.load_state_dict(res.weights("model/"))
    trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed = res.steps
    losses = [res.metrics[s]["loss"] for s in sorted(res.metrics) if "loss" in res.metrics[s]]
    return LightningReceipt(**RemoteReceipt.fields_of(res), losses=losses, metrics=res.metrics)
