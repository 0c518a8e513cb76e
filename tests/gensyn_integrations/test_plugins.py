"""The plugin manager: built-ins always, entry points unless turned off, loud failures."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy
import pytest

import plugins.builtin
from gensyn_integrations import hookspecs
from gensyn_integrations._manager import get_plugin_manager
from gensyn_integrations.config import GensynConfig, StorageConfig, load_config
from gensyn_integrations.errors import (
    ConfigError,
    GensynError,
    PluginError,
    PluginValidationError,
)
from gensyn_integrations.plugins import make_plugin_manager, make_store, storage_backends

MakeDist = Callable[..., Path]  # the make_dist fixture of conftest.py

GOOD_PLUGIN = """
from gensyn_integrations.hookspecs import hookimpl

SEEN = []

@hookimpl
def gensyn_on_root(step, root):
    SEEN.append((step, root))

@hookimpl
def gensyn_configure(config):
    SEEN.append(("configured", config.task.commit_interval))
"""


def plugin(**hooks: Any) -> types.SimpleNamespace:
    """A plugin object whose hook implementations are the given functions, marked."""
    return types.SimpleNamespace(**{name: hookspecs.hookimpl(fn) for name, fn in hooks.items()})


@pytest.fixture
def acme(make_dist: MakeDist) -> Path:
    return make_dist("acme-gensyn", {"acme": "acme_plugin"}, {"acme_plugin": GOOD_PLUGIN})


# --- the specs -------------------------------------------------------------------


def spec_functions() -> dict[str, Any]:
    return {n: f for n, f in vars(hookspecs).items() if n.startswith("gensyn_")}


def test_every_hook_is_prefixed_documented_and_says_who_calls_it() -> None:
    specs = spec_functions()
    assert len(specs) >= 10
    for name, fn in specs.items():
        assert getattr(fn, "gensyn_integrations_spec", None) is not None, name
        assert "Called by" in (fn.__doc__ or ""), name


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("gensyn_execute_task", "firstresult"),
        ("gensyn_build_bundle", "firstresult"),
        ("gensyn_verify_interval", "firstresult"),
        ("gensyn_make_store", "firstresult"),
        ("gensyn_configure", "historic"),
    ],
)
def test_call_semantics_are_declared_in_the_spec(name: str, flag: str) -> None:
    assert getattr(hookspecs, name).gensyn_integrations_spec[flag] is True


# --- built-ins and entry points ----------------------------------------------------


def test_builtins_are_registered_and_every_spec_is_known() -> None:
    pm = make_plugin_manager(builtins=[plugins.builtin], autoload=False)
    assert pm.is_registered(plugins.builtin)
    assert {n for n in vars(pm.hook) if n.startswith("gensyn_")} == set(spec_functions())


def test_an_entry_point_plugin_is_loaded_for_real(acme: Path) -> None:
    pm = make_plugin_manager(builtins=[plugins.builtin], env={})
    loaded = pm.list_entrypoint_plugins()
    assert [(name, dist.metadata["Name"]) for name, _, dist in loaded] == [("acme", "acme-gensyn")]
    pm.hook.gensyn_on_root(step=3, root="ab" * 32, checkpoint=None)
    assert loaded[0][1].SEEN == [(3, "ab" * 32)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_the_autoload_variable_turns_off_third_party_plugins_only(acme: Path, value: str) -> None:
    pm = make_plugin_manager(
        builtins=[plugins.builtin], env={"GENSYN_DISABLE_PLUGIN_AUTOLOAD": value}
    )
    assert not pm.has_plugin("acme")
    assert pm.is_registered(plugins.builtin)


def test_an_explicit_autoload_wins_over_the_variable(acme: Path) -> None:
    env = {"GENSYN_DISABLE_PLUGIN_AUTOLOAD": "1"}
    assert make_plugin_manager(autoload=True, env=env).has_plugin("acme")
    assert not make_plugin_manager(autoload=False, env={}).has_plugin("acme")


def test_the_block_list_comes_from_the_argument_and_the_variable(make_dist: MakeDist) -> None:
    make_dist(
        "three-plugins",
        {"p1": "mod_p1", "p2": "mod_p2", "p3": "mod_p3"},
        {"mod_p1": GOOD_PLUGIN, "mod_p2": GOOD_PLUGIN, "mod_p3": GOOD_PLUGIN},
    )
    pm = make_plugin_manager(block=["p1"], env={"GENSYN_BLOCK_PLUGINS": " p2 ,"})
    assert [pm.has_plugin(n) for n in ("p1", "p2", "p3")] == [False, False, True]
    assert pm.is_blocked("p1")
    assert pm.is_blocked("p2")


def test_a_builtin_cannot_be_blocked() -> None:
    name = "plugins.builtin"
    with pytest.raises(PluginError, match="built-in"):
        make_plugin_manager(builtins=[plugins.builtin], block=[name], env={})


def test_an_entry_point_that_fails_to_import_names_its_distribution(make_dist: MakeDist) -> None:
    make_dist("broken-gensyn", {"broken": "broken_plugin"}, {"broken_plugin": "import nope_404\n"})
    with pytest.raises(PluginError) as info:
        make_plugin_manager(env={})
    msg = str(info.value)
    assert "'broken-gensyn' 0.1" in msg
    assert "'broken'" in msg
    assert "GENSYN_BLOCK_PLUGINS=broken" in msg
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert not make_plugin_manager(env={"GENSYN_BLOCK_PLUGINS": "broken"}).has_plugin("broken")


def test_two_distributions_with_one_plugin_name_are_refused(make_dist: MakeDist) -> None:
    make_dist("first-dist", {"same": "same_a"}, {"same_a": GOOD_PLUGIN})
    make_dist("second-dist", {"same": "same_b"}, {"same_b": GOOD_PLUGIN})
    with pytest.raises(PluginError, match="both provide the plugin 'same'"):
        make_plugin_manager(env={})


def test_entry_points_of_other_groups_are_ignored(make_dist: MakeDist) -> None:
    make_dist("other", {"other": "other_plugin"}, {"other_plugin": "raise SystemExit\n"}, group="x")
    assert make_plugin_manager(env={}).list_entrypoint_plugins() == []


# --- validation ----------------------------------------------------------------------


def test_a_bad_signature_names_the_plugin_and_shows_both_signatures() -> None:
    def gensyn_on_root(step: int, rooot: str) -> None:
        pass

    pm = make_plugin_manager(autoload=False)
    bad = plugin(gensyn_on_root=gensyn_on_root)
    with pytest.raises(PluginValidationError) as info:
        pm.register(bad, name="typo-plugin")
    msg = str(info.value)
    assert "'typo-plugin'" in msg
    assert "hookimpl definition: gensyn_on_root(step: 'int', rooot: 'str')" in msg
    assert "hookspec definition: gensyn_on_root(step, root, checkpoint)" in msg
    assert isinstance(info.value, pluggy.PluginValidationError)
    assert isinstance(info.value, GensynError)
    assert info.value.plugin is bad
    assert not pm.has_plugin("typo-plugin")


def test_an_unknown_hook_is_refused_at_registration_with_the_nearest_name() -> None:
    pm = make_plugin_manager(autoload=False)
    with pytest.raises(PluginValidationError, match="Did you mean 'gensyn_on_root'") as info:
        pm.register(plugin(gensyn_on_rot=lambda step: None), name="p")
    assert "'p'" in str(info.value)
    assert not pm.has_plugin("p")


def test_a_blocked_name_is_skipped_without_validation() -> None:
    pm = make_plugin_manager(autoload=False, block=["p"])
    assert pm.register(plugin(gensyn_on_rot=lambda step: None), name="p") is None
    assert not pm.has_plugin("p")


def test_an_optional_unknown_hook_is_allowed() -> None:
    pm = make_plugin_manager(autoload=False)
    fn = hookspecs.hookimpl(optionalhook=True)(lambda: None)
    pm.register(types.SimpleNamespace(other_project_hook=fn), name="p")
    assert pm.has_plugin("p")


def test_an_unmarked_gensyn_function_is_still_a_hook() -> None:
    calls: list[int] = []

    class Unmarked:
        def gensyn_on_root(self, step: int) -> None:
            calls.append(step)

    pm = make_plugin_manager(autoload=False)
    pm.register(Unmarked())
    pm.hook.gensyn_on_root(step=7, root="00", checkpoint=None)
    assert calls == [7]


def test_a_bad_entry_point_plugin_names_its_distribution(make_dist: MakeDist) -> None:
    source = "def gensyn_make_store(config, extra):\n    return None\n"
    make_dist("badsig-gensyn", {"badsig": "badsig_plugin"}, {"badsig_plugin": source})
    with pytest.raises(PluginValidationError, match="'badsig-gensyn' 0.1"):
        make_plugin_manager(env={})


# --- storage -------------------------------------------------------------------------


class FakeStore:
    def __init__(self, cfg: StorageConfig) -> None:
        self.path = cfg.path


def test_backends_merge_and_the_config_picks_one() -> None:
    pm = make_plugin_manager(builtins=[plugins.builtin], autoload=False)
    pm.register(plugin(gensyn_storage_backends=lambda: {"fake": FakeStore}), name="fake")
    assert "fake" in storage_backends(pm)
    store = make_store(
        pm, load_config(overrides=["storage.backend=fake", "storage.path=/s"], env={})
    )
    assert isinstance(store, FakeStore)
    assert store.path == "/s"


def test_two_plugins_offering_one_backend_are_refused() -> None:
    pm = make_plugin_manager(autoload=False)
    pm.register(plugin(gensyn_storage_backends=lambda: {"x": FakeStore}), name="a")
    pm.register(plugin(gensyn_storage_backends=lambda: {"x": FakeStore}), name="b")
    with pytest.raises(PluginError, match="'a' and 'b'|'b' and 'a'"):
        storage_backends(pm)


def test_an_unknown_backend_suggests_the_nearest_offered_one() -> None:
    pm = make_plugin_manager(autoload=False)
    pm.register(plugin(gensyn_storage_backends=lambda: {"ipfs": FakeStore}), name="a")
    with pytest.raises(ConfigError) as info:
        make_store(pm, load_config(overrides=["storage.backend=ipfz"], env={}))
    assert info.value.key == "storage.backend"
    assert info.value.suggestion == "ipfs"


def test_make_store_hook_takes_over_from_the_table() -> None:
    pm = make_plugin_manager(autoload=False)
    sentinel = object()
    pm.register(plugin(gensyn_make_store=lambda config: sentinel), name="wrapper")
    assert make_store(pm, GensynConfig()) is sentinel


# --- the face's manager ----------------------------------------------------------------


def test_face_manager_registers_builtins_honours_config_and_configures(acme: Path) -> None:
    cfg = load_config(overrides=["task.commit_interval=9"], env={})
    pm = get_plugin_manager(cfg, env={})
    assert pm.is_registered(plugins.builtin)
    module = pm.get_plugin("acme")
    assert module is not None
    assert ("configured", 9) in module.SEEN

    late: list[int] = []
    pm.register(plugin(gensyn_configure=lambda config: late.append(config.task.commit_interval)))
    assert late == [9]  # gensyn_configure is historic

    cfg.plugins.block = ["acme"]
    assert not get_plugin_manager(cfg, env={}).has_plugin("acme")
    cfg.plugins.block, cfg.plugins.autoload = [], False
    assert not get_plugin_manager(cfg, env={}).has_plugin("acme")


def test_face_manager_without_config_reads_gensyn_yaml(tmp_path: Path, acme: Path) -> None:
    (tmp_path / "gensyn.yaml").write_text("plugins:\n  autoload: false\n")
    pm = get_plugin_manager(env={})
    assert not pm.has_plugin("acme")
    assert pm.is_registered(plugins.builtin)


def test_the_builtin_plugin_implements_only_known_hooks() -> None:
    names = [n for n, _ in inspect.getmembers(plugins.builtin) if n.startswith("gensyn_")]
    assert names
    assert set(names) <= set(spec_functions())


def test_builtin_local_store_from_config(tmp_path: Path) -> None:
    """The face's manager turns ``storage.backend: local`` into a real LocalStore."""
    from gensyn_integrations._manager import get_plugin_manager
    from gensyn_integrations.config import load_config

    cfg = load_config(overrides=[f"storage.path={tmp_path / 'store'}", "storage.max_object_bytes=1024"],
                      env={})
    store = make_store(get_plugin_manager(cfg, env={}), cfg)
    cid = store.put(b"hello world")
    assert cid == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    assert store.get(cid) == b"hello world"
    from coordinator.storage import ObjectTooLargeError

    with pytest.raises(ObjectTooLargeError):
        store.put(b"x" * 2048)
