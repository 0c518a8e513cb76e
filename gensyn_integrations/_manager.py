"""The face's plugin manager: built-in plugins first, then third-party ones.

This lives in the face (DESIGN.md, "Layers", 5) because it imports the
``plugins`` package, which the core must not.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

import plugins
from gensyn_integrations.config import GensynConfig, load_config
from gensyn_integrations.plugins import GensynPluginManager, make_plugin_manager

__all__ = ["get_plugin_manager"]


def get_plugin_manager(
    config: GensynConfig | None = None, *, env: Mapping[str, str] | None = None
) -> GensynPluginManager:
    """Build the manager the CLI, strategies and nodes use, and configure its plugins.

    Registers every module in :data:`plugins.BUILTIN_PLUGINS`, then (unless
    ``plugins.autoload`` is false or ``GENSYN_DISABLE_PLUGIN_AUTOLOAD`` is
    set) the entry point group ``gensyn_integrations``, skipping the names in
    ``plugins.block`` and ``GENSYN_BLOCK_PLUGINS``. Finally it calls the
    historic hook ``gensyn_configure``.

    Args:
        config: the settings; None loads them with :func:`load_config`
            (``./gensyn.yaml`` if present, then the environment).
        env: the environment; None reads ``os.environ``.
    """
    env = os.environ if env is None else env
    if config is None:
        config = load_config(env=env)
    builtins = [importlib.import_module(name) for name in plugins.BUILTIN_PLUGINS]
    pm = make_plugin_manager(
        builtins=builtins,
        # config can only turn autoload off: the variable still applies when it is on
        autoload=None if config.plugins.autoload else False,
        block=config.plugins.block,
        env=env,
    )
    pm.hook.gensyn_configure.call_historic(kwargs={"config": config})
    return pm
