"""The ``gensyn`` command groups, one module each.

A group module has ``register(commands)``, which adds its parser and leaf
commands (see :mod:`gensyn_integrations._cli._common`). To add a group, write
the module and list it in :data:`COMMAND_GROUPS`. A group module imports
nothing heavy at the top: ``gensyn --help`` imports every one of them.
"""

from __future__ import annotations

import importlib

from gensyn_integrations._cli._common import Commands

__all__ = ["COMMAND_GROUPS", "add_command_groups"]

COMMAND_GROUPS: tuple[str, ...] = ("config", "ree", "account", "funds", "contracts", "launch", "devnet", "task", "node")
"""Group modules in the order ``gensyn --help`` lists them; later: account, devnet, task, solver, launch."""


def add_command_groups(commands: Commands) -> None:
    """Let every group in :data:`COMMAND_GROUPS` add its commands."""
    for name in COMMAND_GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(commands)
