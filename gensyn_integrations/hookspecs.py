"""Every hook a gensyn-integrations plugin can implement, named ``gensyn_*``.

Hooks are grouped as the life of a job runs (DESIGN.md, "Data flow of one
job"): lifecycle, checkpoint, verification, storage and payment. Each
docstring says who calls the hook, when, and what a result means.

A plugin implements a hook by defining a function of the same name, marked
with :data:`hookimpl`, that takes any subset of the hook's arguments::

    from gensyn_integrations.hookspecs import hookimpl

    @hookimpl
    def gensyn_on_root(step, root):
        print(step, root)

Records named here (``TaskSpec``, ``Trace``, ``Receipt``, stores) belong to
higher layers (``ree``, ``coordinator``); this module names them only in
prose, so the core never imports those layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pluggy

if TYPE_CHECKING:
    from gensyn_integrations.config import GensynConfig, StorageConfig

PROJECT_NAME: Final = "gensyn_integrations"
"""The pluggy project name, and the entry point group third-party plugins use."""

hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)

hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a plugin function as a hook implementation.

pluggy's marker is typed with overloads, so mypy sees the decorated function
unchanged, whether it is used bare (``@hookimpl``) or with options
(``@hookimpl(tryfirst=True)``); ape needs a ``cast`` for the same effect only
because older pluggy was untyped.
"""

StoreFactory = Callable[["StorageConfig"], Any]
"""Builds a store from the ``storage`` config section (see :func:`gensyn_storage_backends`)."""


# -------------------------------------------------------------------------
# lifecycle: configure, package a job, run it
# -------------------------------------------------------------------------


@hookspec(historic=True)
def gensyn_configure(config: GensynConfig) -> None:
    """Read the settings, once they are loaded.

    Called by the face (the CLI, a strategy, a node) right after it builds
    the plugin manager. The call is historic: a plugin registered later
    still receives it when it registers. The result is ignored.

    :param config: the merged config (defaults, file, environment, overrides).
    """


@hookspec
def gensyn_task_spec_extras(task: Any, config: GensynConfig) -> Mapping[str, Any] | None:
    """Add settings that change the result to a task before it is posted.

    Called by the client while it builds a ``coordinator`` ``TaskSpec``,
    once the core fields are set and before the spec is hashed and stored
    (DESIGN.md, "Data flow", step 2: "every setting that changes the
    result"). Every plugin is called.

    :param task: the ``TaskSpec`` being built. Do not modify it.
    :param config: the merged config.
    :return: a mapping of plain values (canonical JSON) merged into the spec's
        extras; its keys should start with the plugin's name. None adds nothing.
        Two plugins that return the same key are an error.
    """


@hookspec(firstresult=True)
def gensyn_build_bundle(
    task: Any, source: Any, workdir: Path, config: GensynConfig
) -> Sequence[Path] | None:
    """Write a job's bundle: its code, initial weights and data shards.

    Called by the client after :func:`gensyn_task_spec_extras`, before the
    bundle's files are stored under CIDs (DESIGN.md, "Data flow", step 2).
    The first plugin that recognises ``source`` answers.

    :param task: the ``TaskSpec``; ``task.framework`` says which plugin owns it.
    :param source: what the user handed over: a LightningModule and its
        datamodule, a Trainer, a script path.
    :param workdir: an empty directory to write the bundle into. Only source
        files and REE checkpoints (safetensors plus canonical JSON) may be
        written: nothing that must be unpickled on the other side
        (DESIGN.md, "Trust boundaries").
    :return: the files written, relative to ``workdir``; None if this plugin
        does not handle ``source``.
    """


@hookspec(firstresult=True)
def gensyn_execute_task(task: Any, workdir: Path, config: GensynConfig) -> Any | None:
    """Run a task to its end under the REE.

    Called by a solver after it has claimed the task and unpacked its bundle,
    every CID checked, into ``workdir`` (DESIGN.md, "Data flow", step 3).
    ``task`` is a ``coordinator.tasks.RunRequest``: the ``TaskSpec`` (``.spec``),
    its ``.framework``, the bundle folder, the checkpoint to start from, the
    steps to run and the root and checkpoint cadence. The first plugin whose
    framework matches ``task.framework`` answers. It
    applies the REE with ``task``'s mode and seed, takes a root every
    ``commit_interval`` optimizer steps (calling :func:`gensyn_on_root`) and
    stops at the task's last step.

    :return: the run's result (its ``ree`` ``Trace``, final state root and the
        checkpoint files), or None if this plugin does not run this framework.
        A failure of the user's code is raised as is: the solver commits it
        as a deterministic failure (DESIGN.md, "Settlement").
    """


# -------------------------------------------------------------------------
# checkpoint: roots and the trace they make
# -------------------------------------------------------------------------


@hookspec
def gensyn_on_root(step: int, root: str, checkpoint: Path | None) -> None:
    """See a state root as soon as it is taken.

    Called by the executor (in the solver or verifier process) at the end of
    each training batch that performed an optimizer step, after the scheduler
    has stepped, every ``commit_interval`` steps (DESIGN.md, "The state
    schema", "When a root is taken"). Every plugin is called; the result is
    ignored. Use it for progress reports, or to pin the checkpoint elsewhere.
    It must not change the training state.

    :param step: the REE's optimizer-step counter (``ree/step``).
    :param root: the state root, hex.
    :param checkpoint: the REE checkpoint that hashes to ``root``, if one was
        written for this step.
    """


@hookspec
def gensyn_before_commit(task: Any, trace: Any) -> None:
    """Inspect a finished trace before the solver commits it on chain.

    Called by a solver after :func:`gensyn_execute_task` returns and before
    the commit half of commit-reveal is sent (DESIGN.md, "Data flow", step 3).
    Every plugin is called; the result is ignored. Raising stops the commit,
    so the solver misses its deadline and forfeits its bond: raise only for
    a trace that must not be committed.

    :param task: the ``TaskSpec``.
    :param trace: the ``ree`` ``Trace``: interval roots, leaf 0 the initial state.
    """


# -------------------------------------------------------------------------
# verification: spot checks and disputes
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def gensyn_verify_interval(
    task: Any, checkpoint: Path, start_step: int, end_step: int, workdir: Path, config: GensynConfig
) -> str | None:
    """Re-execute one interval of a committed trace and return its end root.

    Called by a verifier for each interval drawn after the reveal under the
    ``spot`` policy, and by a solver re-deriving per-step roots inside a
    disputed interval (DESIGN.md, "Verification" and "A dispute", level 2).
    ``task`` is a ``coordinator.tasks.RunRequest``, as for
    :func:`gensyn_execute_task`. The first plugin whose framework matches
    ``task.framework`` answers.

    :param checkpoint: the REE checkpoint at ``start_step``, CID and root
        already checked.
    :return: the state root at ``end_step``, hex; None if this plugin does not
        run this framework. The caller compares it with the committed root.
    """


@hookspec
def gensyn_on_dispute(dispute: Any) -> None:
    """See a dispute open, move a round, or end.

    Called by every node that is a party to, or referee of, a dispute, each
    time its on-chain state changes (DESIGN.md, "A dispute (Verde)"). Every
    plugin is called; the result is ignored.

    :param dispute: the ``coordinator`` dispute record: task id, parties,
        level, bisection bounds, and the verdict once there is one.
    """


# -------------------------------------------------------------------------
# storage: content-addressed stores
# -------------------------------------------------------------------------


@hookspec
def gensyn_storage_backends() -> Mapping[str, StoreFactory] | None:
    """Offer store backends by name.

    Called by :func:`gensyn_integrations.plugins.storage_backends` when a
    store is needed and no :func:`gensyn_make_store` answered. Every plugin
    is called; the mappings are merged.

    :return: ``{name: factory}``; ``config.storage.backend`` picks a name and
        the factory receives the ``storage`` section. Two plugins that offer
        the same name are an error.
    """


@hookspec(firstresult=True)
def gensyn_make_store(config: GensynConfig) -> Any | None:
    """Build the store a node uses, taking over from the backend table.

    Called by :func:`gensyn_integrations.plugins.make_store` before it looks
    ``config.storage.backend`` up in :func:`gensyn_storage_backends`. Use it to
    wrap a store (a cache, a mirror); the first non-None result wins.

    :return: a store whose ``get`` checks every CID before returning bytes
        (DESIGN.md, "What must never happen"), or None to use the table.
    """


# -------------------------------------------------------------------------
# payment: settlement
# -------------------------------------------------------------------------


@hookspec
def gensyn_on_payment(receipt: Any) -> None:
    """See a task settle.

    Called by the client when its task is final, and by a solver or verifier
    when it is paid or slashed (DESIGN.md, "Settlement"). Every plugin is
    called; the result is ignored.

    :param receipt: the ``coordinator`` ``Receipt``: task id, transactions,
        CIDs, roots, cost, fee burned and verification outcome.
    """
