"""The REE settings shared by the Transformers and Accelerate integrations.

A value passed in code wins; a value left as None comes from the gensyn config
(``gensyn.yaml`` and the ``GENSYN_*`` variables that ``gensyn launch`` sets on
every rank). The config is read only when a value is missing, so code that
passes everything never touches the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from gensyn_integrations.errors import ConfigError

ROLES = ("executor", "client")
REE_FILE = "ree-state.safetensors"
"""The REE checkpoint's name inside a framework checkpoint folder (checkpoint-N/, save_state dirs)."""


@dataclass(frozen=True)
class ReeSettings:
    """How a run records its trace: steps between roots, REE mode, seed, CPU threads."""

    commit_interval: int
    mode: str
    seed: int | None
    threads: int | None


def check_role(role: object, where: str, *, client: bool = False) -> str:
    """Return ``role`` when ``where`` runs it: the executor role always, the client role if ``client``.

    ``client`` is True for the classes that can send a job to the network
    (``GensynTrainer``, ``GensynCallback`` as its settings); elsewhere asking for
    the client role is a clear error rather than a silent local run.
    """
    if role == "executor" or (role == "client" and client):
        return str(role)
    if role == "client":
        raise ConfigError(
            f"{where}: role='client' is not offered here: it sends training to the network "
            "through GensynTrainer(role='client') (Transformers) or `gensyn launch --remote` "
            "(Accelerate). Use role='executor' to train here under the REE and record the trace.",
            key="role",
            source=where,
        )
    raise ConfigError.bad_value("role", role, f"one of {ROLES!r}", source=where, choices=ROLES)


def resolve(
    commit_interval: int | None, mode: str | None, seed: int | None, threads: int | None
) -> ReeSettings:
    """Fill the values left as None from the gensyn config."""
    if commit_interval is None or mode is None or threads is None:
        from gensyn_integrations.config import load_config

        cfg = load_config()
        commit_interval = cfg.task.commit_interval if commit_interval is None else commit_interval
        mode = cfg.ree.mode if mode is None else mode
        # the config's null means "let the REE pick", and the REE picks one thread
        threads = (cfg.ree.threads or 1) if threads is None else threads
    return ReeSettings(commit_interval=commit_interval, mode=mode, seed=seed, threads=threads)
