"""The layered config: precedence, and errors that name the key, the source and the fix."""

from __future__ import annotations

import dataclasses
import pickle
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gensyn_integrations.config import (
    GensynConfig,
    ReeConfig,
    load_config,
    to_dict,
    to_yaml,
    validate_config,
)
from gensyn_integrations.errors import ConfigError, GensynError

ADDRESS = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def env_name(key: str) -> str:
    return "GENSYN_" + key.upper().replace(".", "__")


def load_with(layer: str, key: str, value: str, tmp_path: Path) -> GensynConfig:
    """Load a config that sets dotted ``key`` to the YAML text ``value`` in one layer."""
    if layer == "file":
        section, _, rest = key.partition(".")
        text = f"{section}:\n  {rest}: {value}\n" if rest else f"{section}: {value}\n"
        return load_config(write(tmp_path / "g.yaml", text), env={})
    if layer == "env":
        return load_config(env={env_name(key): value})
    return load_config(overrides=[f"{key}={value}"], env={})


# --- defaults and precedence -------------------------------------------------


def test_defaults_are_the_dataclass_defaults_and_valid() -> None:
    cfg = load_config(env={})
    assert cfg == GensynConfig()
    assert validate_config(GensynConfig()) == cfg
    assert cfg.network.rpc_url is None  # None means: start the embedded devnet


@pytest.mark.parametrize(
    ("in_file", "in_env", "in_cli", "expected"),
    [
        (True, False, False, 2),
        (True, True, False, 3),
        (True, True, True, 4),
        (False, True, True, 4),
        (True, False, True, 4),
    ],
)
def test_file_then_environment_then_command_line(
    tmp_path: Path, in_file: bool, in_env: bool, in_cli: bool, expected: int
) -> None:
    path = (
        write(tmp_path / "g.yaml", "task:\n  commit_interval: 2\n  budget: 7\n")
        if in_file
        else None
    )
    env = {"GENSYN_TASK__COMMIT_INTERVAL": "3"} if in_env else {}
    overrides = ["task.commit_interval=4"] if in_cli else []
    cfg = load_config(path, overrides, env=env)
    assert cfg.task.commit_interval == expected
    assert cfg.task.budget == (7 if in_file else GensynConfig().task.budget)


def test_gensyn_yaml_in_the_working_directory_is_read_by_default(tmp_path: Path) -> None:
    write(tmp_path / "gensyn.yaml", "ree:\n  mode: strict\n  seed: 11\n")
    cfg = load_config(env={})
    assert (cfg.ree.mode, cfg.ree.seed) == ("strict", 11)


def test_an_explicit_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(tmp_path / "nope.yaml", env={})
    assert info.value.source == str(tmp_path / "nope.yaml")


def test_accelerate_is_passed_through_with_any_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", "accelerate:\n  mixed_precision: bf16\n  fsdp: {x: 1}\n")
    cfg = load_config(path, env={"GENSYN_ACCELERATE__NUM_PROCESSES": "2"})
    assert cfg.accelerate == {"mixed_precision": "bf16", "fsdp": {"x": 1}, "num_processes": 2}


def test_variables_that_are_not_settings_are_ignored() -> None:
    assert load_config(env={"GENSYN_DEBUG": "1", "HOME": "/x"}) == GensynConfig()


# --- unknown keys --------------------------------------------------------------

TYPOS = [
    ("network.rpc_ur", "network.rpc_url"),
    ("storage.backnd", "storage.backend"),
    ("task.comit_interval", "task.commit_interval"),
    ("ree.sed", "ree.seed"),
    ("plugins.autolod", "plugins.autoload"),
    ("tsk.budget", "task"),
]


@pytest.mark.parametrize("layer", ["file", "env", "cli"])
@pytest.mark.parametrize(("key", "suggestion"), TYPOS)
def test_an_unknown_key_names_itself_its_source_and_the_nearest_key(
    tmp_path: Path, layer: str, key: str, suggestion: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_with(layer, key, "1", tmp_path)
    err = info.value
    unknown = "tsk" if key.startswith("tsk") else key
    assert err.key == unknown
    assert err.suggestion == suggestion
    source = {
        "file": str(tmp_path / "g.yaml"),
        "env": f"environment ({env_name(key)})",
        "cli": f"command line ({key}=1)",
    }[layer]
    assert err.source == source
    shown = env_name(suggestion) if layer == "env" else suggestion
    assert f"Did you mean {shown!r}?" in str(err)
    assert str(err).startswith(source)
    if layer == "file":
        assert err.line == (1 if key.startswith("tsk") else 2)


def test_an_unrelated_key_gets_no_suggestion_but_the_list_of_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["task.xyz=1"], env={})
    assert info.value.suggestion is None
    assert "task.commit_interval" in str(info.value)


def test_a_variable_with_one_underscore_after_the_section_is_caught() -> None:
    with pytest.raises(ConfigError, match="GENSYN_TASK__BUDGET"):
        load_config(env={"GENSYN_TASK_BUDGET": "5"})


def test_an_override_without_equals_sign_says_how_to_write_it() -> None:
    with pytest.raises(ConfigError, match=r"-o task\.commit_interval=5"):
        load_config(overrides=["task.commit_interval"], env={})


# --- wrong types ---------------------------------------------------------------


@pytest.mark.parametrize("layer", ["file", "env", "cli"])
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("task.commit_interval", "abc", "an integer"),
        ("ree.threads", "many", "an integer or null"),
        ("plugins.block", "solo", "a list"),
        ("plugins.autoload", "[1, 2]", "true or false"),
        ("task", "5", "a mapping of its settings"),
    ],
)
def test_a_wrong_type_names_the_key_the_source_and_the_type(
    tmp_path: Path, layer: str, key: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_with(layer, key, value, tmp_path)
    assert info.value.key == key
    assert f"must be {expected}" in str(info.value)
    if layer == "file":
        assert info.value.line is not None
        assert f"line {info.value.line}:" in str(info.value)


def test_a_float_amount_is_refused_with_a_hint_about_base_units() -> None:
    with pytest.raises(ConfigError, match="base units") as info:
        load_config(overrides=["task.budget=1e18"], env={})
    assert info.value.key == "task.budget"


def test_a_broken_interpolation_is_named() -> None:
    with pytest.raises(ConfigError, match="interpolation") as info:
        load_config(overrides=["ree.seed=${task.nope}"], env={})
    assert info.value.key == "ree.seed"


def test_an_interpolation_that_resolves_is_kept() -> None:
    cfg = load_config(
        overrides=["task.commit_interval=6", "ree.seed=${task.commit_interval}"], env={}
    )
    assert cfg.ree.seed == 6


# --- ranges --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "suggestion"),
    [
        (["task.commit_interval=0"], "task.commit_interval", None),
        (["task.budget=-1"], "task.budget", None),
        (["task.bond=-5"], "task.bond", None),
        (["task.verifier_fee=-1"], "task.verifier_fee", None),
        (["task.challenge_window_s=0"], "task.challenge_window_s", None),
        (["task.policy=spt"], "task.policy", "spot"),
        (["task.policy=replicate", "task.replicas=1"], "task.replicas", None),
        (["ree.mode=stict"], "ree.mode", "strict"),
        ([f"ree.seed={2**64}"], "ree.seed", None),
        (["ree.seed=-1"], "ree.seed", None),
        (["ree.threads=0"], "ree.threads", None),
        (["network.confirmations=0"], "network.confirmations", None),
        (["storage.max_object_bytes=0"], "storage.max_object_bytes", None),
    ],
)
def test_values_out_of_range_are_refused(
    overrides: list[str], key: str, suggestion: str | None
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides, env={})
    assert info.value.key == key
    assert info.value.suggestion == suggestion
    assert info.value.source == f"command line ({overrides[-1]})"


def test_a_range_error_in_a_file_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", "# settings\nree:\n  seed: 1\n  mode: fast\n")
    with pytest.raises(ConfigError, match=r"line 4: ree\.mode is 'fast'") as info:
        load_config(path, env={})
    assert info.value.line == 4


def test_validate_config_checks_a_config_built_in_code() -> None:
    with pytest.raises(ConfigError, match="ree.mode"):
        validate_config(GensynConfig(ree=ReeConfig(mode="fast")))


# --- malformed files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("task:\n  budget: 5\n  policy: [spot\n", 4, "not valid YAML"),
        ("task:\n  budget: 5\n budget: 6\n", 3, "not valid YAML"),
        ("task:\n  budget: 5\n  budget: 6\n", 3, "twice"),
        ("ree:\n  seed: 1\n---\nree:\n  seed: 2\n", 3, "not valid YAML"),
    ],
)
def test_malformed_yaml_names_the_file_and_the_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path / "g.yaml", text)
    with pytest.raises(ConfigError, match=problem) as info:
        load_config(path, env={})
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}, line {line}: ")


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(write(tmp_path / "g.yaml", "- task\n- ree\n"), env={})


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "g.yaml", "# nothing yet\n"), env={}) == GensynConfig()


# --- YAML 1.2 scalars ----------------------------------------------------------


def test_an_address_stays_a_string_in_every_layer(tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", f"network:\n  account: {ADDRESS}\n")
    assert load_config(path, env={}).network.account == ADDRESS
    assert load_config(env={"GENSYN_NETWORK__ACCOUNT": ADDRESS}).network.account == ADDRESS
    assert load_config(overrides=[f"network.account={ADDRESS}"], env={}).network.account == ADDRESS


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("task.budget", "010", 10),  # decimal, not YAML 1.1 octal
        ("ree.seed", "1_000", 1000),  # an integer field takes Python's digit grouping
        ("storage.path", "1_000", "1_000"),  # YAML 1.1 would read 1000 into a string field
        ("ree.seed", "0x10", None),  # hex is not an amount or a seed: refused, not guessed
        ("storage.path", "yes", "yes"),  # YAML 1.1 would read true
        ("storage.path", "12:30", "12:30"),  # YAML 1.1 would read 750
        ("storage.path", "2024-01-01", "2024-01-01"),  # YAML 1.1 would read a date
    ],
)
def test_scalars_are_read_as_yaml_1_2(key: str, value: str, expected: object) -> None:
    if expected is None:
        with pytest.raises(ConfigError, match="an integer"):
            load_config(overrides=[f"{key}={value}"], env={})
        return
    cfg = to_dict(load_config(overrides=[f"{key}={value}"], env={}))
    section, name = key.split(".")
    assert cfg[section][name] == expected


@settings(deadline=None, max_examples=50)
@given(n=st.integers(min_value=1, max_value=2**70), zeros=st.integers(0, 3))
def test_an_integer_override_round_trips(n: int, zeros: int) -> None:
    cfg = load_config(overrides=[f"task.commit_interval={'0' * zeros}{n}"], env={})
    assert cfg.task.commit_interval == n


@settings(deadline=None, max_examples=50)
@given(digits=st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=40))
def test_a_hex_string_override_round_trips(digits: str) -> None:
    account = "0x" + digits
    cfg = load_config(env={"GENSYN_NETWORK__ACCOUNT": account})
    assert cfg.network.account == account


# fragments that YAML or omegaconf would read as something else if written carelessly
TRICKY = ["${", "${a}", "\\", "}", ": ", " #", "'", '"', "0x1f", "010", "true", "null", "~", "- "]
TEXT = st.text(
    alphabet=string.ascii_letters + string.digits + " -_./:#'\"[]{}$\\!?,&*", max_size=20
) | (
    st.lists(st.sampled_from(TRICKY) | st.text(string.ascii_letters, max_size=3), max_size=6).map(
        "".join
    )
)


@settings(deadline=None, max_examples=60)
@given(
    path=TEXT,
    account=st.none() | TEXT,
    interval=st.integers(1, 10**6),
    seed=st.integers(0, 2**64 - 1),
    block=st.lists(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True), max_size=3),
)
def test_to_yaml_reads_back_to_an_equal_config(
    path: str, account: str | None, interval: int, seed: int, block: list[str]
) -> None:
    cfg = GensynConfig()
    cfg.storage.path = path or "."
    cfg.network.account = account
    cfg.task.commit_interval = interval
    cfg.ree.seed = seed
    cfg.plugins.block = block
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "gensyn.yaml"
        file.write_text(to_yaml(cfg))
        assert load_config(file, env={}) == cfg


# --- the error itself ----------------------------------------------------------


def test_config_error_is_a_gensyn_error_and_a_value_error_and_pickles() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["task.comit_interval=1"], env={})
    err = info.value
    assert isinstance(err, GensynError)
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err)
    assert dataclasses.astuple(_attrs(copy)) == dataclasses.astuple(_attrs(err))


@dataclasses.dataclass
class _Attrs:
    key: str | None
    source: str | None
    suggestion: str | None
    line: int | None


def _attrs(err: ConfigError) -> _Attrs:
    return _Attrs(err.key, err.source, err.suggestion, err.line)
