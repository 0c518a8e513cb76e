"""The settings of gensyn-integrations: one typed, layered config.

The schema is a tree of dataclasses read by omegaconf as a *structured*
config. :func:`load_config` merges, later layers winning:

1. the defaults below;
2. a YAML file (``gensyn.yaml`` in the working directory, if present);
3. environment variables ``GENSYN_<SECTION>__<KEY>``, e.g.
   ``GENSYN_TASK__COMMIT_INTERVAL=5``;
4. command-line overrides ``section.key=value``, e.g. ``task.commit_interval=5``.

An unknown key, a value of the wrong type or out of range, in any layer,
raises :class:`~gensyn_integrations.errors.ConfigError` naming the key, where
it came from, and the nearest valid key.

Values are read as YAML 1.2 scalars: ``0x5aAe...`` stays a string (YAML 1.1
would make an Ethereum address an integer), and only ``true``/``false`` are
booleans. Amounts are integers in the token's base units (1 token = 10**18).

Importing this module imports neither torch nor any training framework.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gensyn_integrations import _config
from gensyn_integrations.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "POLICIES",
    "REE_MODES",
    "GensynConfig",
    "NetworkConfig",
    "PluginsConfig",
    "ReeConfig",
    "StorageConfig",
    "TaskConfig",
    "load_config",
    "to_dict",
    "to_yaml",
    "validate_config",
]

DEFAULT_CONFIG_FILE = "gensyn.yaml"
ENV_PREFIX = "GENSYN_"

TOKEN = 10**18  # base units in one token, as for ether and wei

POLICIES = ("replicate", "spot")
REE_MODES = ("device", "strict")


@dataclass
class NetworkConfig:
    """Which chain to use and who signs (DESIGN.md, "Real parts and how they start").

    Attributes:
        rpc_url: an EVM JSON-RPC endpoint; None starts the embedded devnet.
        chain_id: the chain id to insist on; None takes the node's.
        deployment: a JSON file of deployed contract addresses; None means the
            devnet deploys its own.
        keystore: the directory of encrypted keystores (default ~/.gensyn/keystore, or $GENSYN_KEYSTORE).
        account: the address or alias to act as, when the keystore holds several.
        confirmations: blocks, counting the one that includes a transaction,
            before it is treated as final.
    """

    rpc_url: str | None = None
    chain_id: int | None = None
    deployment: str | None = None
    keystore: str | None = None
    account: str | None = None
    confirmations: int = 1


@dataclass
class StorageConfig:
    """Where content-addressed blobs live (DESIGN.md, "Real parts", storage).

    Attributes:
        backend: the name of a store offered by a plugin (``local``, ``ipfs``).
        path: the local store's directory.
        ipfs_api_url: the Kubo-compatible RPC API the ``ipfs`` store talks to.
        max_object_bytes: the largest blob a store accepts or fetches.
    """

    backend: str = "local"
    path: str = ".gensyn/store"
    ipfs_api_url: str = "http://127.0.0.1:5001"
    max_object_bytes: int = 16 * 2**30


@dataclass
class TaskConfig:
    """How a job is posted, paid and verified (DESIGN.md, "Data flow of one job").

    Attributes:
        budget: escrowed pay, in token base units.
        policy: ``spot`` (verifiers re-execute sampled intervals) or
            ``replicate`` (``replicas`` solvers run the job and compare roots).
        replicas: k, the number of solvers under ``replicate``.
        spot_samples: paid spot checks under ``spot``; each is one verifier
            re-executing one interval drawn after the reveal. 44 catch a solver
            that fakes >= 10% of its intervals with >= 99% probability
            (``coordinator.dispute.spot_policy``).
        commit_interval: optimizer steps between two state roots (10: hashing the
            state every step costs a small model ~40% of its step time). Under
            ``spot``, keep at least 10 x ``spot_samples`` intervals (440 by
            default) so that the checks cost <= 10% extra compute.
        claim_deadline_s: chain-time seconds for a solver to claim the task.
        commit_deadline_s: chain-time seconds from claim to commit.
        challenge_window_s: chain-time seconds to challenge a commit.
        bond: what a solver locks when it claims, in token base units.
        verifier_fee: paid for each spot check, in token base units.
    """

    budget: int = TOKEN
    policy: str = "spot"
    replicas: int = 2
    spot_samples: int = 44
    commit_interval: int = 10
    claim_deadline_s: int = 600
    commit_deadline_s: int = 3600
    challenge_window_s: int = 120
    bond: int = TOKEN // 10
    verifier_fee: int = TOKEN // 1000


@dataclass
class ReeConfig:
    """How the Reproducible Execution Environment runs (DESIGN.md, "The REE: two modes").

    Attributes:
        mode: ``device`` (bitwise identical on one hardware class) or
            ``strict`` (bitwise identical across CPUs and GPUs).
        seed: the seed of every generator, 0 <= seed < 2**64.
        threads: the fixed CPU thread count; None lets the REE pick.
    """

    mode: str = "device"
    seed: int = 0
    threads: int | None = None


@dataclass
class PluginsConfig:
    """Which third-party plugins load.

    Attributes:
        autoload: load the entry point group ``gensyn_integrations``. The
            variable ``GENSYN_DISABLE_PLUGIN_AUTOLOAD=1`` turns it off too.
            Built-in plugins always load.
        block: entry point names never to load, added to ``GENSYN_BLOCK_PLUGINS``.
    """

    autoload: bool = True
    block: list[str] = field(default_factory=list)


@dataclass
class GensynConfig:
    """The whole config. ``accelerate`` is passed to Accelerate as it is; its keys are checked there."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    ree: ReeConfig = field(default_factory=ReeConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    accelerate: dict[str, Any] | None = None


def _replicas_ok(k: int, cfg: Mapping[str, Any]) -> bool:
    # one replica has nothing to disagree with, so it verifies nothing
    return cfg["task"]["policy"] != "replicate" or k >= 2


RULES = (
    _config.at_least("network.chain_id", 1, optional=True),
    _config.at_least("network.confirmations", 1),
    _config.Rule("storage.backend", lambda v, _: bool(v), "a backend name such as 'local'"),
    _config.at_least("storage.max_object_bytes", 1),
    _config.at_least("task.budget", 0),
    _config.one_of("task.policy", POLICIES),
    _config.Rule("task.replicas", _replicas_ok, "at least 2 when task.policy is 'replicate'"),
    _config.at_least("task.spot_samples", 1),
    _config.at_least("task.commit_interval", 1),
    _config.at_least("task.claim_deadline_s", 1),
    _config.at_least("task.commit_deadline_s", 1),
    _config.at_least("task.challenge_window_s", 1),
    _config.at_least("task.bond", 0),
    _config.at_least("task.verifier_fee", 0),
    _config.one_of("ree.mode", REE_MODES),
    _config.at_least("ree.seed", 0, below=2**64),
    _config.at_least("ree.threads", 1, optional=True),
)
"""The range checks every layer must pass, in the order they are checked."""


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> GensynConfig:
    """Read the config: defaults, then a YAML file, then the environment, then overrides.

    Args:
        path: the YAML file. None reads ``./gensyn.yaml`` if it exists; an
            explicit path that does not exist is an error.
        overrides: ``"section.key=value"`` strings, as given to ``gensyn -o``.
        env: the environment to read ``GENSYN_<SECTION>__<KEY>`` variables
            from; None reads ``os.environ``.

    Raises:
        ConfigError: naming the key, the source and the nearest valid key.
    """
    env = os.environ if env is None else env
    layers: list[_config.Layer] = []
    file_path = _resolve_file(path)
    if file_path is not None:
        layers.append(_config.file_layer(file_path))
    layers.extend(_config.env_layers(env, ENV_PREFIX, GensynConfig))
    layers.extend(_config.override_layer(item) for item in overrides)
    return _config.merge_layers(GensynConfig, layers, RULES)


def _resolve_file(path: str | Path | None) -> Path | None:
    if path is None:
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.is_file() else None
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise ConfigError.unreadable(
            str(p),
            f"the config file {what}",
            hint="Pass the path of a YAML file, or leave --config out to use "
            f"./{DEFAULT_CONFIG_FILE} when present.",
        )
    return p


def validate_config(cfg: GensynConfig, *, source: str = "code") -> GensynConfig:
    """Check a config built in code (types and ranges) and return it as a fresh copy."""
    data = to_dict(cfg)
    return _config.merge_layers(GensynConfig, [_config.Layer(source=source, data=data)], RULES)


def to_dict(cfg: GensynConfig) -> dict[str, Any]:
    """The config as plain dicts, lists and scalars (for JSON, or a TaskSpec)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: GensynConfig) -> str:
    """The config as YAML that :func:`load_config` reads back to an equal config."""
    return OmegaConf.to_yaml(OmegaConf.create(_escape(to_dict(cfg))))


_INTERPOLATION = re.compile(r"(\\*)\$\{")


def _escape(value: Any) -> Any:
    # a loaded config is fully resolved, so a "${" left in it is literal text;
    # omegaconf reads "\${" as a literal "${", and "\\" before it as one backslash
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", value)
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value
