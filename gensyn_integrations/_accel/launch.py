"""``gensyn launch``: run a training script with ``accelerate launch``, configured by ``gensyn.yaml``.

accelerate cannot read ``gensyn.yaml`` itself: its parser refuses ``--config``
(``allow_abbrev=False``), its config loader refuses unknown top-level keys, and
the training processes see only the environment, never the config path
(NOTES.md, "Accelerate"). So the launcher splits the file:

* the ``accelerate:`` section, checked here against accelerate's own config
  schema, is written to a temporary accelerate config file and passed with
  ``--config_file``;
* every other setting reaches every rank as ``GENSYN_<SECTION>__<KEY>``, the
  variables :func:`gensyn_integrations.config.load_config` reads.

A mistake in either part is a :class:`ConfigError` naming the key, the file and
line, and the nearest valid key, raised before any process starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gensyn_integrations import _config
from gensyn_integrations.config import ENV_PREFIX, GensynConfig, load_config
from gensyn_integrations.errors import ConfigError, UsageError

# keys accelerate's loader still converts from older config files (config_args.process_config)
_LEGACY_KEYS = ("fp16", "dynamo_backend")


def accelerate_keys(section: Mapping[str, Any]) -> list[str]:
    """The top-level keys accelerate's config loader accepts for this kind of config."""
    from accelerate.commands.config.config_args import ClusterConfig, SageMakerConfig

    sagemaker = section.get("compute_environment") == "AMAZON_SAGEMAKER"
    cls = SageMakerConfig if sagemaker else ClusterConfig
    return sorted({*cls.__dataclass_fields__, *_LEGACY_KEYS})


def check_accelerate_section(
    section: Mapping[str, Any], *, source: str, text: str | None = None
) -> None:
    """Raise ConfigError for what accelerate would refuse: an unknown key, no distributed_type."""
    valid = accelerate_keys(section)
    for key in section:
        if key not in valid:
            dotted = f"accelerate.{key}"
            raise ConfigError.unknown_key(
                dotted,
                source=source,
                valid=[f"accelerate.{k}" for k in valid],
                line=_config.yaml_line(text, dotted) if text is not None else None,
            )
    if "distributed_type" not in section:
        raise ConfigError.bad_value(
            "accelerate.distributed_type",
            None,
            "set: accelerate needs it (NO, MULTI_CPU, MULTI_GPU, ...)",
            source=source,
            hint="For 2 local CPU ranks write `distributed_type: MULTI_GPU`, `use_cpu: true` "
            "and `num_processes: 2`.",
        )


def gensyn_environment(cfg: GensynConfig) -> dict[str, str]:
    """Every setting but ``accelerate`` as ``GENSYN_<SECTION>__<KEY>`` variables.

    Values are written as JSON, which the config loader reads back as YAML 1.2
    scalars unchanged: strings stay strings, ``null`` stays None.
    """
    env: dict[str, str] = {}
    for section in dataclasses.fields(cfg):
        if section.name == "accelerate":
            continue
        values = dataclasses.asdict(getattr(cfg, section.name))
        for key, value in values.items():
            env[f"{ENV_PREFIX}{section.name.upper()}__{key.upper()}"] = json.dumps(value)
    return env


def accelerate_command(
    config_file: Path | None, script: str, script_args: Sequence[str]
) -> list[str]:
    """The ``accelerate launch`` command line, as a module run by this interpreter."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        cmd += ["--config_file", str(config_file)]
    return [*cmd, script, *script_args]


def prepare(
    config: str | os.PathLike[str] | None,
    overrides: Sequence[str],
    env: Mapping[str, str],
    script: str,
) -> tuple[GensynConfig, dict[str, str]]:
    """Check everything before launching: the config (every section) and the script.

    Returns the merged config and the variables to add to the children's environment.
    """
    cfg = load_config(Path(config) if config is not None else None, overrides, env=env)
    path = Path(config) if config is not None else Path("gensyn.yaml")
    source = str(path) if path.is_file() else "config"
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    if cfg.accelerate is not None:
        check_accelerate_section(cfg.accelerate, source=source, text=text)
    if not Path(script).is_file():
        what = "is a directory" if Path(script).is_dir() else "does not exist"
        raise UsageError(
            f"the training script {script!r} {what}; pass the path of a Python file, "
            "e.g. `gensyn launch --config gensyn.yaml train.py --epochs 3`"
        )
    extra = gensyn_environment(cfg)
    if cfg.accelerate is not None and cfg.accelerate.get("use_cpu"):
        # NOTES.md: 2 local CPU ranks need MULTI_GPU + use_cpu, and this variable too
        extra["ACCELERATE_USE_CPU"] = "true"
    return cfg, extra


def launch(
    config: str | os.PathLike[str] | None,
    overrides: Sequence[str],
    env: Mapping[str, str],
    script: str,
    script_args: Sequence[str],
    *,
    dry_run: bool = False,
) -> int:
    """Run ``script`` under ``accelerate launch``; return its exit status."""
    cfg, extra = prepare(config, overrides, env, script)
    child_env = {**env, **extra}
    with tempfile.TemporaryDirectory(prefix="gensyn-launch-") as tmp:
        config_file = None
        if cfg.accelerate is not None:
            config_file = Path(tmp) / "accelerate.yaml"
            config_file.write_text(yaml.safe_dump(dict(cfg.accelerate), sort_keys=True))
        cmd = accelerate_command(config_file, script, script_args)
        if dry_run:
            for name in sorted(extra):
                sys.stdout.write(f"{name}={extra[name]}\n")
            if config_file is not None:
                sys.stdout.write(config_file.read_text())
            sys.stdout.write(" ".join(cmd) + "\n")
            return 0
        return subprocess.run(cmd, env=child_env, check=False).returncode
