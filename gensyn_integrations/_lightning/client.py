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

import inspect
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gensyn_integrations.errors import ConfigError

ENTRY = "plugins.lightning_executor:build_shipped"
FRAMEWORK = "lightning"
WEIGHTS_FILE = "gensyn_weights.safetensors"
DATA_FILE = "gensyn_data.safetensors"
_PRECISIONS = {"32-true": "fp32", "32": "fp32", "64-true": "fp64", "64": "fp64"}


@dataclass
class LightningReceipt:
    """What a remote ``fit`` bought: ids, transactions, CIDs, the verified root, cost and solvers."""

    task_id: int
    transactions: list[str]
    spec_cid: str
    manifest_cids: list[str]
    result_cids: list[str]
    final_root: str
    verified: bool
    outcome: str
    cost: int
    fee_burned: int
    solvers: list[str]
    losses: list[float] = field(default_factory=list)


class ShipError(ConfigError):
    """A part of the job cannot be sent to the network as source; the message says how to fix it."""


def _fix(what: str, why: str, how: str) -> ShipError:
    return ShipError(f"cannot ship {what} to the network: {why}. {how}", key="fit",
                     source="GensynStrategy(role='client')")  # fmt: skip


def _installed(path: Path) -> bool:
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    return any(path.is_relative_to(Path(r).resolve()) for r in roots)


def class_ref(obj: Any, what: str) -> tuple[dict[str, Any], Path | None]:
    """Where ``type(obj)`` is defined, as the executor finds it: ``({file|import, qualname, hparams}, file)``.

    Raises :class:`ShipError` for classes without a source file (a notebook cell, the
    REPL), classes defined inside a function, and modules whose constructor
    arguments were not saved with ``save_hyperparameters()``.
    """
    cls = type(obj)
    name = cls.__qualname__
    how = f"define {name} at the top level of a .py file and import it from there"
    if "<locals>" in name or "<lambda>" in name:
        raise _fix(what, f"{name} is defined inside a function", how)
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
        raise _fix(what, f"{name} has no source file (it was defined in {where})", how)
    path = Path(src).resolve()
    hparams = dict(getattr(obj, "hparams", {}) or {})
    required = [
        p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]  # fmt: skip
    missing = [p for p in required if p not in hparams]
    if missing:
        raise _fix(what, f"{name}({', '.join(missing)}) needs arguments the network cannot see",
                   "call self.save_hyperparameters() in its __init__ (plain JSON values only)")  # fmt: skip
    ref: dict[str, Any] = {"qualname": name, "hparams": hparams}
    if cls.__module__ != "__main__" and _installed(path):
        ref["import"] = cls.__module__
        return ref, None
    if not path.name.isidentifier() and not path.stem.isidentifier():
        raise _fix(what, f"its file {path.name!r} is not a Python module name", "rename the file")
    ref["file"] = path.name
    return ref, path


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
    files: dict[str, bytes] = {}
    code: list[str] = []

    def add(ref: dict[str, Any], path: Path | None) -> None:
        if path is None:
            return
        old = files.get(path.name)
        data = path.read_bytes()
        if old is not None and old != data:
            raise _fix("the job", f"two different files are named {path.name!r}", "rename one of them")
        if old is None:
            files[path.name] = data
            code.append(path.name)

    mref, mpath = class_ref(model, "the LightningModule")
    add(mref, mpath)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    files[WEIGHTS_FILE] = save(state)
    args: dict[str, Any] = {"module": mref, "weights": WEIGHTS_FILE}
    if datamodule is not None:
        dref, dpath = class_ref(datamodule, "the LightningDataModule")
        add(dref, dpath)
        args["datamodule"] = dref
    elif train is not None:
        meta, data = _loader_data(train)
        files[DATA_FILE] = data
        args["loader"] = meta
    else:
        raise ConfigError("fit() got no training data; pass a datamodule or a train DataLoader",
                          key="train_dataloaders", source="Trainer.fit(...)")  # fmt: skip
    s = strategy
    spec = TaskSpec(
        entry=ENTRY, code=tuple(code), framework=FRAMEWORK, init_args=args, steps=int(trainer.max_steps),
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
        """Send ``fit`` to the network; run anything else locally."""
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        if trainer is None or str(getattr(fn, "value", fn)) != "fit":
            return function(*args, **kwargs)
        model, train, _val, datamodule = (list(args) + [None] * 4)[:4]
        model = kwargs.get("model", model)
        train = kwargs.get("train_dataloaders", train)
        datamodule = kwargs.get("datamodule", datamodule)
        self.strategy.receipt = fit_remote(self.strategy, trainer, model, train, datamodule)
        status = type(trainer.state.status)
        trainer.state.status = status.FINISHED
        return None


def fit_remote(strategy: Any, trainer: Any, model: Any, train: Any, datamodule: Any) -> LightningReceipt:
    """Ship, post, wait, fetch, check and load: the whole remote ``fit`` (:func:`run_remote`)."""
    import torch

    from gensyn_integrations._remote import run_remote

    spec, files = build_job(strategy, trainer, model, train, datamodule)
    res = run_remote(spec, files, frameworks=("torch", FRAMEWORK), timeout=strategy.timeout)
    with torch.no_grad():
        model.load_state_dict(res.weights("model/"))
    trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed = res.steps
    r = res.receipt
    return LightningReceipt(
        task_id=res.task_id, transactions=res.transactions, spec_cid=r.spec_cid,
        manifest_cids=[s.manifest_cid for s in r.slots], result_cids=[s.result_cid for s in r.slots],
        final_root=r.final_root, verified=True, outcome=r.outcome, cost=r.paid + r.fee_burned,
        fee_burned=r.fee_burned, solvers=[s.solver for s in r.slots],
    )  # fmt: skip
