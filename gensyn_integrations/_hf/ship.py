"""What ``GensynTrainer(role="client")`` sends to the network, and what it refuses to send.

A Transformers job travels as (DESIGN.md, "Data flow", step 2):

* the model: its config as JSON and its class (a ``transformers`` class by name,
  or a class in a ``.py`` file of the user's, shipped as source), plus its
  current weights as safetensors;
* the training data: the train dataset materialised, every example read once
  through :class:`ree.SeededDataset` at epoch 0, as columns of a safetensors
  file. A dataset whose examples change from epoch to epoch (random
  augmentation in ``__getitem__``) cannot be frozen this way and is refused;
* the ``TrainingArguments`` that change the result (:data:`SHIPPED_ARGS`); the
  rest are settings of this machine (logging, saving, workers) and stay here.
  An argument outside both lists, set away from its default, is refused rather
  than silently dropped;
* the REE settings of the trainer's ``GensynCallback``.

On the solver, ``plugins.hf_executor`` rebuilds the same ``GensynTrainer`` in
the executor role, so the order of the data (:class:`ree.ReproducibleSampler`
keyed by the data seed) and every step match a local executor run bit for bit.
"""

from __future__ import annotations

import enum
import inspect
import json
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from gensyn_integrations.errors import ConfigError

ENTRY = "plugins.hf_executor:build_shipped"
FRAMEWORK = "transformers"
WEIGHTS_FILE = "gensyn_weights.safetensors"
DATA_FILE = "gensyn_data.safetensors"
WHO = "GensynTrainer(role='client')"

# In the TaskSpec's own fields: steps, batch size, accumulation, clipping and seed.
SPEC_ARGS = frozenset({"max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                       "max_grad_norm", "seed"})  # fmt: skip
SHIPPED_ARGS = frozenset({
    "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim",
    "optim_args", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
    "label_smoothing_factor", "data_seed", "dataloader_drop_last", "remove_unused_columns",
    "label_names", "use_cache", "average_tokens_across_devices",
})  # fmt: skip
"""``TrainingArguments`` that change the result and travel in the task's ``init_args``."""

IGNORED_ARGS = frozenset({
    "output_dir", "num_train_epochs", "logging_strategy", "logging_steps", "logging_first_step",
    "log_on_each_node", "logging_nan_inf_filter", "include_num_input_tokens_seen", "log_level",
    "log_level_replica", "disable_tqdm", "report_to", "run_name", "project", "trackio_space_id",
    "trackio_bucket_id", "trackio_static_space_id", "eval_steps", "eval_delay",
    "per_device_eval_batch_size", "prediction_loss_only", "eval_do_concat_batches",
    "eval_use_gather_object", "eval_accumulation_steps", "include_for_metrics",
    "batch_eval_metrics", "bf16_full_eval", "fp16_full_eval", "save_only_model", "save_strategy",
    "save_steps", "save_on_each_node", "save_total_limit", "enable_jit_checkpoint", "push_to_hub",
    "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push",
    "hub_revision", "metric_for_best_model", "greater_is_better", "ignore_data_skip",
    "restore_callback_states_from_checkpoint", "use_cpu", "accelerator_config",
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "dataloader_multiprocessing_context", "dataloader_in_order",
    "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph",
    "ddp_backend", "ddp_timeout", "skip_memory_metrics", "do_train", "do_eval", "do_predict",
    "resume_from_checkpoint", "local_rank", "torch_empty_cache_steps", "length_column_name",
})  # fmt: skip
"""``TrainingArguments`` that do not change the trained weights: they stay on this machine."""

_HF_CALLBACKS = ("DefaultFlowCallback", "ProgressCallback", "PrinterCallback", "GensynCallback")


class ShipError(ConfigError):
    """A part of the job cannot be sent to the network; the message says how to fix it."""


def _fix(what: str, why: str, how: str, key: str = "train") -> ShipError:
    return ShipError(f"cannot ship {what} to the network: {why}. {how}", key=key, source=WHO)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------- arguments


def training_args(args: Any) -> dict[str, Any]:
    """The shipped ``TrainingArguments`` as JSON; raises :class:`ShipError` for what cannot travel."""
    from transformers import TrainingArguments

    from ree._encoding import canonical_json

    if args.max_steps is None or args.max_steps <= 0:
        raise _fix("the job", "a remote train() runs a fixed number of optimizer steps",
                   "pass TrainingArguments(max_steps=N)", key="max_steps")  # fmt: skip
    if str(_plain(args.eval_strategy)) != "no" or args.eval_on_start or args.load_best_model_at_end:
        raise _fix("evaluation during training", "the network trains only; evaluating in between "
                   "would draw from the training RNG", "set eval_strategy='no' and "
                   "call trainer.evaluate() after train(): it runs here on the returned weights",
                   key="eval_strategy")  # fmt: skip
    default = TrainingArguments(output_dir=args.output_dir)
    changed = [
        f.name for f in fields(args)
        if f.name not in SHIPPED_ARGS | SPEC_ARGS | IGNORED_ARGS | {"eval_strategy", "eval_on_start",
                                                                    "load_best_model_at_end"}
        and _plain(getattr(args, f.name)) != _plain(getattr(default, f.name))
    ]  # fmt: skip
    if changed:
        shown = ", ".join(f"{n}={_plain(getattr(args, n))!r}" for n in changed)
        raise _fix("the TrainingArguments", f"{shown} would change training and the network "
                   "executor does not run it", "leave them at their defaults for a remote train() "
                   "(the REE runs fp32 or fp64, one process, no compilation)", key=changed[0])  # fmt: skip
    out = {n: _plain(getattr(args, n)) for n in sorted(SHIPPED_ARGS)}
    try:
        canonical_json(out)
    except Exception as e:
        raise _fix("the TrainingArguments", f"a shipped value is not plain JSON ({e})",
                   "use plain numbers, strings, lists and dicts", key="args") from e  # fmt: skip
    return out


# ---------------------------------------------------------------------- code


def _source_ref(cls: type, what: str) -> tuple[dict[str, Any], Path | None]:
    """``({"transformers": name} | {"file", "qualname"}, file to ship or None)`` for ``cls``."""
    import transformers

    name = cls.__qualname__
    if cls.__module__.partition(".")[0] == "transformers":
        if getattr(transformers, name, None) is not cls:
            raise _fix(what, f"transformers.{name} is not a public class", "use a public class")
        return {"transformers": name}, None
    how = f"define {name} at the top level of a .py file and import it from there"
    if "<locals>" in name:
        raise _fix(what, f"{name} is defined inside a function", how)
    found: Any = sys.modules.get(cls.__module__)
    for part in name.split("."):
        found = getattr(found, part, None)
    try:
        src = inspect.getsourcefile(cls) if found is cls else None
    except (TypeError, OSError):
        src = None
    if not src or src.startswith("<") or not Path(src).is_file():
        where = (
            "__main__ of a notebook or the REPL" if cls.__module__ == "__main__" else cls.__module__
        )
        raise _fix(what, f"{name} has no source file (it was defined in {where})", how)
    path = Path(src).resolve()
    if not path.stem.isidentifier():
        raise _fix(what, f"its file {path.name!r} is not a Python module name", "rename the file")
    return {"file": path.name, "qualname": name}, path


def model_ref(model: Any) -> tuple[dict[str, Any], list[Path], str]:
    """The model's class, config class and config as JSON; the files to ship; its precision."""
    import torch
    from transformers import PreTrainedModel

    from ree._encoding import canonical_json

    if not isinstance(model, PreTrainedModel):
        raise _fix("the model", f"it is a {type(model).__name__}, not a transformers "
                   "PreTrainedModel built from its config", "subclass PreTrainedModel (with a "
                   "PreTrainedConfig) in a .py file, or use a transformers model class",
                   key="model")  # fmt: skip
    cls_ref, cls_file = _source_ref(type(model), "the model")
    cfg_ref, cfg_file = _source_ref(type(model.config), "the model's config")
    try:  # the config's own JSON form: int keys (id2label) become strings, as from_dict expects
        config = json.loads(model.config.to_json_string(use_diff=False))
        canonical_json(config)
    except Exception as e:
        raise _fix("the model's config", f"config.to_dict() is not plain JSON ({e})",
                   "keep config values to numbers, strings, lists and dicts", key="model") from e  # fmt: skip
    dtypes = {p.dtype for p in model.state_dict().values() if p.is_floating_point()}
    precision = {frozenset({torch.float32}): "fp32", frozenset({torch.float64}): "fp64"}.get(
        frozenset(dtypes)
    )
    if precision is None:
        raise _fix("the model", f"its weights are {sorted(map(str, dtypes))}", "the network trains "
                   "fp32 or fp64 weights: call model.float() (or .double()) first", key="model")  # fmt: skip
    ref = {"class": cls_ref, "config_class": cfg_ref, "config": config,
           "attn_implementation": getattr(model.config, "_attn_implementation", None)}  # fmt: skip
    return ref, [p for p in (cls_file, cfg_file) if p is not None], precision


# ---------------------------------------------------------------------- data


def _kind(key: str, value: Any) -> str:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, np.ndarray):
        return "numpy"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list | tuple):
        return "list"
    raise _fix("the training data", f"field {key!r} of an example is a {type(value).__name__}",
               "give the model tensors, numbers or lists of numbers (tokenise text first)")  # fmt: skip


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    import numpy as np
    import torch

    if list(a) != list(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                return False
        elif isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _column(key: str, kind: str, values: list[Any]) -> Any:
    import numpy as np
    import torch

    try:
        if kind == "tensor":
            return torch.stack([v.detach().cpu() for v in values]).contiguous()
        if kind == "numpy":
            return torch.from_numpy(np.stack(values)).contiguous()
        if kind in ("int", "bool"):
            return torch.tensor(values, dtype=torch.bool if kind == "bool" else torch.int64)
        if kind == "float":
            return torch.tensor(values, dtype=torch.float64)
        col = torch.tensor(values)
    except (RuntimeError, ValueError, TypeError) as e:
        raise _fix("the training data", f"the examples' {key!r} fields differ in shape or type "
                   f"({e})", "pad every example to one length in the dataset, so the default "
                   "collator stacks them") from e  # fmt: skip
    if col.is_floating_point():
        col = col.to(torch.float64)
    if col.tolist() != [list(v) if isinstance(v, tuple) else v for v in values]:
        raise _fix("the training data", f"the lists in field {key!r} mix ints and floats",
                   "use one number type per field")  # fmt: skip
    return col


def dataset_payload(dataset: Any, seed: int) -> tuple[dict[str, Any], bytes]:
    """The train dataset as safetensors columns, read at epoch 0 through ``SeededDataset``."""
    from safetensors.torch import save
    from torch.utils.data import IterableDataset

    from ree._data import KeyedIndex, SeededDataset

    how = "pass a map-style dataset (with __len__ and __getitem__) of dicts of tensors or numbers"
    if dataset is None:
        raise _fix("the training data", "the Trainer has no train_dataset", how)
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise _fix("the training data", f"{type(dataset).__name__} has no length", how)
    n = len(dataset)
    if n == 0:
        raise _fix("the training data", "the train dataset is empty", how)
    ds: SeededDataset[Any] = SeededDataset(dataset, seed=seed)
    items = [ds[KeyedIndex(i, 0, i)] for i in range(n)]
    if not isinstance(items[0], Mapping):
        raise _fix(
            "the training data", f"its examples are {type(items[0]).__name__}, not dicts", how
        )
    for i in range(min(n, 4)):  # examples must not change with the epoch: they are frozen here
        if not _same(items[i], ds[KeyedIndex(i, 1, i)]):
            raise _fix("the training data", f"example {i} differs between epochs (random "
                       "augmentation in __getitem__?)", "make the examples fixed, or train with "
                       "role='executor' where the dataset runs as code")  # fmt: skip
    keys = list(items[0])
    kinds = [(k, _kind(k, items[0][k])) for k in keys]
    cols = {}
    for k, kind in kinds:
        values = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or list(item) != keys:
                raise _fix("the training data", f"example {i} has fields "
                           f"{list(item) if isinstance(item, Mapping) else type(item).__name__}, "
                           f"example 0 {keys}", "give every example the same fields")  # fmt: skip
            if _kind(k, item[k]) != kind:
                raise _fix("the training data", f"field {k!r} is a {kind} in example 0 but not "
                           f"in example {i}", "use one type per field")  # fmt: skip
            values.append(item[k])
        cols[k] = _column(k, kind, values)
    meta = {"file": DATA_FILE, "n": n, "columns": [[k, kind] for k, kind in kinds]}
    return meta, save(cols)


# ---------------------------------------------------------------------- the job


def _check_trainer(trainer: Any) -> None:
    from transformers.data.data_collator import default_data_collator

    from gensyn_integrations._hf.trainer import GensynTrainer

    if type(trainer) is not GensynTrainer:
        raise _fix("the trainer", f"{type(trainer).__name__} subclasses GensynTrainer, and the "
                   "network runs GensynTrainer itself", "move custom behaviour into the model's "
                   "forward (a PreTrainedModel in a .py file), or train with role='executor'",
                   key="trainer")  # fmt: skip
    if trainer.model_init is not None:
        raise _fix("the model", "model_init builds it on the fly", "pass model= instead",
                   key="model_init")  # fmt: skip
    if (
        trainer.optimizer is not None
        or trainer.lr_scheduler is not None
        or getattr(trainer, "optimizer_cls_and_kwargs", None)
    ):
        raise _fix("the optimizer", "optimizers= (or optimizer_cls_and_kwargs=) hands the Trainer "
                   "live objects", "choose it with TrainingArguments(optim=..., "
                   "lr_scheduler_type=...)", key="optimizers")  # fmt: skip
    if getattr(trainer, "compute_loss_func", None) is not None:
        raise _fix("the loss", "compute_loss_func is a Python callable",
                   "compute the loss in the model's forward (return it as outputs.loss)",
                   key="compute_loss_func")  # fmt: skip
    if trainer.data_collator is not default_data_collator:
        c = trainer.data_collator
        name = getattr(c, "__name__", type(c).__name__)
        raise _fix("the data collator", f"{name} has no form the network runs", "pad and label "
                   "the examples in the dataset and pass data_collator=default_data_collator",
                   key="data_collator")  # fmt: skip
    extra = [type(cb).__name__ for cb in trainer.callback_handler.callbacks
             if type(cb).__name__ not in _HF_CALLBACKS
             and not type(cb).__module__.startswith("transformers.integrations")]  # fmt: skip
    if extra:
        raise _fix("the callbacks", f"{extra} may change training and the executor does not run "
                   "them", "remove them for a remote train()", key="callbacks")  # fmt: skip


def build_job(trainer: Any) -> tuple[Any, dict[str, bytes]]:
    """The TaskSpec and bundle files of ``trainer.train()`` in the client role."""
    from safetensors.torch import save

    from coordinator.tasks import TaskSpec

    _check_trainer(trainer)
    cb = trainer.gensyn_callback
    if cb.mode != "device":
        raise ShipError(f"GensynCallback(mode={cb.mode!r}): the transformers executor runs "
                        "mode='device'", key="mode", source=WHO)  # fmt: skip
    args = trainer.args
    shipped = training_args(args)
    seed = int(args.seed if cb.seed is None else cb.seed)
    data_seed = int(args.data_seed) if args.data_seed is not None else seed
    mref, code_files, precision = model_ref(trainer.model)
    files: dict[str, bytes] = {}
    for path in code_files:
        old = files.get(path.name)
        data = path.read_bytes()
        if old is not None and old != data:
            raise _fix("the job", f"two different files are named {path.name!r}", "rename one")
        files[path.name] = data
    state = {
        k: v.detach().cpu().clone().contiguous() for k, v in trainer.model.state_dict().items()
    }
    files[WEIGHTS_FILE] = save(state)
    meta, data = dataset_payload(trainer.train_dataset, data_seed)
    files[DATA_FILE] = data
    init_args = {"model": mref, "weights": WEIGHTS_FILE, "dataset": meta, "args": shipped,
                 "threads": int(cb.threads or 1)}  # fmt: skip
    spec = TaskSpec(
        entry=ENTRY, code=tuple(sorted({p.name for p in code_files})), framework=FRAMEWORK,
        init_args=init_args, data=(DATA_FILE,), steps=int(args.max_steps),
        batch_size=int(args.per_device_train_batch_size),
        accumulation=int(args.gradient_accumulation_steps),
        clip_norm=float(args.max_grad_norm) if args.max_grad_norm and args.max_grad_norm > 0 else None,
        precision=precision, seed=seed, ree_mode=cb.mode, commit_interval=cb.commit_interval,
        policy=trainer.policy, budget=trainer.budget, bond=trainer.bond, claim_window=600,
        work_window=600, reveal_window=600, challenge_window=trainer.challenge_window,
    )  # fmt: skip
    return spec, files
