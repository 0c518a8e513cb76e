"""The plugin manager: hookspecs, built-in plugins, then third-party entry points.

This module is core (DESIGN.md, "Layers"): it builds a manager from what it
is given and never imports ``plugins`` or ``coordinator``. The face
(:func:`gensyn_integrations._manager.get_plugin_manager`) hands it the
built-in plugins.

Two environment variables, as pytest has:

* ``GENSYN_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party entry points.
  Built-in plugins always load.
* ``GENSYN_BLOCK_PLUGINS=a,b`` never loads the entry points named ``a``, ``b``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import pluggy

from gensyn_integrations import hookspecs
from gensyn_integrations.errors import (
    ConfigError,
    PluginError,
    PluginValidationError,
    nearest,
)

if TYPE_CHECKING:
    from gensyn_integrations.config import GensynConfig

__all__ = [
    "AUTOLOAD_ENV",
    "BLOCK_ENV",
    "ENTRY_POINT_GROUP",
    "GensynPluginManager",
    "make_plugin_manager",
    "make_store",
    "storage_backends",
]

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
AUTOLOAD_ENV = "GENSYN_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "GENSYN_BLOCK_PLUGINS"
_HOOK_PREFIX = "gensyn_"
_TRUE = {"1", "true", "yes", "on"}


class GensynPluginManager(pluggy.PluginManager):
    """A pluggy manager that fails loudly and says what to do.

    Beyond pluggy it:

    * treats an unmarked function named ``gensyn_*`` as a hook implementation
      (as pytest does with ``pytest_*``), so a forgotten ``@hookimpl`` is not
      a hook that silently never runs;
    * rejects an implementation of a hook that has no spec when the plugin
      registers, not at the first call, and suggests the nearest hook name;
    * raises :class:`~gensyn_integrations.errors.PluginValidationError`
      (also pluggy's) with the bad signature and the spec's signature;
    * wraps entry points that fail to load in
      :class:`~gensyn_integrations.errors.PluginError`.

    Hookspecs must be added before plugins register; :func:`make_plugin_manager`
    does so.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self._entrypoint_dists: dict[str, importlib.metadata.Distribution] = {}

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        """Pick up marked functions, and unmarked functions named ``gensyn_*``."""
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is not None or not name.startswith(_HOOK_PREFIX):
            return opts
        found = inspect.getattr_static(plugin, name, None)
        if inspect.isfunction(found) or isinstance(found, staticmethod | classmethod):
            return {
                "wrapper": False,
                "hookwrapper": False,
                "optionalhook": False,
                "tryfirst": False,
                "trylast": False,
                "specname": None,
            }
        return None

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register ``plugin`` (see pluggy), checking every hook it implements first."""
        plugin_name = name or self.get_canonical_name(plugin)
        if self.is_blocked(plugin_name):
            return None  # as pluggy: a blocked name is skipped, not validated
        self._check_hook_names(plugin, plugin_name)
        try:
            return super().register(plugin, name)
        except PluginValidationError:
            raise
        except pluggy.PluginValidationError as exc:
            raise PluginValidationError(exc.plugin, self._explain(exc, plugin_name)) from exc

    def _check_hook_names(self, plugin: Any, plugin_name: str) -> None:
        specs = [n for n in vars(self.hook) if n.startswith(_HOOK_PREFIX)]
        for attr in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None or opts.get("optionalhook"):
                continue
            hook_name = opts.get("specname") or attr
            hook = getattr(self.hook, hook_name, None)
            if hook is not None and hook.has_spec():
                continue
            guess = nearest(hook_name, specs)
            msg = f"Plugin {plugin_name!r} implements {hook_name!r}, which is not a gensyn hook."
            if guess is not None:
                msg += f" Did you mean {guess!r}?"
            msg += (
                " Rename it to a hook in gensyn_integrations.hookspecs, mark it"
                " @hookimpl(optionalhook=True) if it belongs to another plugin's hooks,"
                f" or block the plugin with {BLOCK_ENV}={plugin_name}."
            )
            raise PluginValidationError(plugin, msg)

    def _explain(self, exc: pluggy.PluginValidationError, plugin_name: str) -> str:
        msg = str(exc)
        for line in msg.splitlines():
            _, _, hook_name = line.partition(" for hook ")
            hook = getattr(self.hook, hook_name.strip("'"), None) if hook_name else None
            if hook is not None and hook.spec is not None:
                spec_args = ", ".join(hook.spec.argnames)
                msg += f"\nhookspec definition: {hook.name}({spec_args})"
                break
        return (
            f"{msg}\nFix the plugin's signature to take a subset of the hookspec's arguments,"
            f" or block the plugin with {BLOCK_ENV}={plugin_name}."
        )

    def load_setuptools_entrypoints(self, group: str, name: str | None = None) -> int:
        """Load the plugins of entry point ``group``; return how many, as pluggy does.

        Blocked names are skipped. An entry point that fails to import raises
        PluginError naming the distribution and what to do.
        """
        count = 0
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != group or (name is not None and ep.name != name):
                    continue
                if self.is_blocked(ep.name):
                    continue
                if self.has_plugin(ep.name):
                    self._check_same_dist(ep, dist)
                    continue
                self._register_entrypoint(ep, dist)
                count += 1
        return count

    def _register_entrypoint(
        self, ep: importlib.metadata.EntryPoint, dist: importlib.metadata.Distribution
    ) -> None:
        origin = f"entry point {ep.name!r} ({ep.value}) of distribution {_dist_label(dist)}"
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"The plugin {origin} failed to import: {type(exc).__name__}: {exc}. "
                f"Reinstall or upgrade that distribution, or skip it with {BLOCK_ENV}={ep.name} "
                f"(or {AUTOLOAD_ENV}=1 to skip every third-party plugin)."
            ) from exc
        try:
            self.register(plugin, name=ep.name)
        except PluginValidationError as exc:
            raise PluginValidationError(exc.plugin, f"{exc}\n(from the {origin})") from exc
        self._entrypoint_dists[ep.name] = dist

    def _check_same_dist(
        self, ep: importlib.metadata.EntryPoint, dist: importlib.metadata.Distribution
    ) -> None:
        # the same distribution seen twice on sys.path is harmless; two
        # distributions claiming one name would make which one loads an accident
        first = self._entrypoint_dists.get(ep.name)
        if first is None:
            raise PluginError(
                f"The entry point {ep.name!r} of distribution {_dist_label(dist)} has the name "
                "of a plugin already registered (a built-in). Rename the entry point."
            )
        if _dist_key(first) != _dist_key(dist):
            raise PluginError(
                f"Two distributions, {_dist_label(first)} and {_dist_label(dist)}, both "
                f"provide the plugin {ep.name!r}. Uninstall one of them."
            )

    def list_entrypoint_plugins(self) -> list[tuple[str, object, importlib.metadata.Distribution]]:
        """``(name, plugin, distribution)`` for each plugin loaded from an entry point."""
        return [
            (n, self.get_plugin(n), d)
            for n, d in self._entrypoint_dists.items()
            if self.has_plugin(n)
        ]


def _dist_key(dist: importlib.metadata.Distribution) -> str:
    return (dist.metadata["Name"] or "?").lower().replace("_", "-")


def _dist_label(dist: importlib.metadata.Distribution) -> str:
    return f"{dist.metadata['Name']!r} {dist.version}"


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in _TRUE


def make_plugin_manager(
    *,
    builtins: Iterable[object] = (),
    autoload: bool | None = None,
    block: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> GensynPluginManager:
    """Build a manager: add the hookspecs, register ``builtins``, then load entry points.

    Args:
        builtins: plugins registered always, under their canonical names,
            whatever the block list and autoload say.
        autoload: load the entry point group ``gensyn_integrations``. None
            loads it unless ``GENSYN_DISABLE_PLUGIN_AUTOLOAD`` is set; True or
            False decides regardless of the variable.
        block: entry point names not to load, on top of ``GENSYN_BLOCK_PLUGINS``.
        env: the environment to read; None reads ``os.environ``.

    Returns:
        The manager. ``len(pm.list_entrypoint_plugins())`` is how many
        third-party plugins loaded (pluggy's own loader returns that count).

    Raises:
        PluginValidationError: a plugin implements an unknown hook or a bad signature.
        PluginError: an entry point failed to import, or a block names a built-in.
    """
    env = os.environ if env is None else env
    pm = GensynPluginManager()
    pm.add_hookspecs(hookspecs)
    for plugin in builtins:
        pm.register(plugin)
    blocked = set(block) | {b.strip() for b in env.get(BLOCK_ENV, "").split(",") if b.strip()}
    for name in sorted(blocked):
        if pm.has_plugin(name):
            raise PluginError(
                f"{name!r} is a built-in plugin, which cannot be blocked. "
                f"Remove it from {BLOCK_ENV} and from plugins.block."
            )
        pm.set_blocked(name)
    if autoload is None:
        autoload = not _env_flag(env, AUTOLOAD_ENV)
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def storage_backends(pm: pluggy.PluginManager) -> dict[str, hookspecs.StoreFactory]:
    """Merge every plugin's :func:`~gensyn_integrations.hookspecs.gensyn_storage_backends`."""
    merged: dict[str, hookspecs.StoreFactory] = {}
    owner: dict[str, str] = {}
    for impl in pm.hook.gensyn_storage_backends.get_hookimpls():
        if impl.wrapper or impl.hookwrapper:
            continue
        offered = cast("Mapping[str, hookspecs.StoreFactory] | None", impl.function()) or {}
        for backend, factory in offered.items():
            if backend in merged:
                raise PluginError(
                    f"The plugins {owner[backend]!r} and {impl.plugin_name!r} both offer the "
                    f"storage backend {backend!r}. Block one of them with {BLOCK_ENV}."
                )
            merged[backend], owner[backend] = factory, impl.plugin_name
    return merged


def make_store(pm: pluggy.PluginManager, config: GensynConfig) -> Any:
    """The store ``config`` asks for: a :func:`gensyn_make_store` answer, else the backend table."""
    store = pm.hook.gensyn_make_store(config=config)
    if store is not None:
        return store
    backends = storage_backends(pm)
    name = config.storage.backend
    if name not in backends:
        offered = ", ".join(sorted(backends)) or "none: no plugin offers a store"
        raise ConfigError.bad_value(
            "storage.backend",
            name,
            f"a backend a plugin offers ({offered})",
            source="the storage backends of the installed plugins",
            choices=backends,
            hint="Set storage.backend to one of them, or install the plugin that offers it.",
        )
    return backends[name](config.storage)
