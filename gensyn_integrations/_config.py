"""The machinery behind :mod:`gensyn_integrations.config`: layers, YAML, checks.

Each source of settings (a file, one environment variable, one override) is
a :class:`Layer`. Layers are merged one at a time, and every layer is checked
as it is merged, so an error always names the source that caused it.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from gensyn_integrations.errors import ConfigError

T = TypeVar("T")


# --------------------------------------------------------------------------
# YAML 1.2 scalars
# --------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core scalars and no duplicate keys.

    YAML 1.1 reads ``0x5aAe...`` (an Ethereum address) as an integer,
    ``010`` as octal, ``12:30`` as base 60 and ``yes``/``on`` as booleans; a
    config of addresses and amounts must not be silently rewritten that way.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_DROPPED_TAGS = {"tag:yaml.org,2002:" + t for t in ("bool", "int", "float", "timestamp", "value")}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_Loader.add_constructor(
    "tag:yaml.org,2002:int",
    lambda loader, node: int(loader.construct_scalar(node)),  # decimal: "010" is ten
)


def parse_yaml(text: str) -> Any:
    """Parse one YAML document with YAML 1.2 scalars (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def yaml_line(text: str, key: str) -> int | None:
    """The 1-based line where dotted ``key`` is written in ``text``, or None."""
    try:
        node = yaml.compose(text, Loader=_Loader)  # noqa: S506 - composes nodes, builds nothing
    except yaml.YAMLError:
        return None
    line = None
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == part:
                line, node = k.start_mark.line + 1, v
                break
        else:
            return None
    return line


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One source of settings: its nested data and how to name it in an error."""

    source: str
    data: dict[str, Any]
    text: str | None = None  # a file's text, to find the line of a key
    spell: Callable[[str], str] = str  # writes a dotted key as this source does

    def line_of(self, key: str) -> int | None:
        """The file line of ``key``, for a file layer."""
        return yaml_line(self.text, key) if self.text is not None else None

    def sets(self, key: str) -> bool:
        """Whether this layer sets dotted ``key``."""
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
        return True


def file_layer(path: Path) -> Layer:
    """Read a YAML config file as a layer (ConfigError for I/O, syntax or shape)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.unreadable(source, f"the config file cannot be read ({exc})") from exc
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError.unreadable(
            source, f"this is not valid YAML: {problem}", line=line
        ) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError.unreadable(
            source,
            f"the file holds a {type(data).__name__}, not a mapping of sections",
            hint="Write sections at the top level, e.g. `task:` then `  commit_interval: 5`.",
        )
    return Layer(source=source, data={str(k): v for k, v in data.items()}, text=text)


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        data = {part: data}
    return data


def _parse_value(raw: str, source: str) -> Any:
    try:
        return parse_yaml(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError.unreadable(
            source,
            f"the value {raw!r} is not valid YAML ({problem})",
            hint="Quote it, or fix its brackets.",
        ) from exc


def env_layers(env: Mapping[str, str], prefix: str, schema: type) -> list[Layer]:
    """One layer per ``<PREFIX><SECTION>__<KEY>`` variable, sorted by name."""
    sections = [f.name for f in dataclasses.fields(schema)]

    def spell(key: str) -> str:
        return prefix + key.upper().replace(".", "__")

    layers = []
    for name in sorted(env):
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        source = f"environment ({name})"
        if "__" not in rest and rest.lower() not in sections:
            section = next((s for s in sections if rest.lower().startswith(s + "_")), None)
            if section is not None:
                fixed = prefix + section.upper() + "__" + rest[len(section) + 1 :]
                raise ConfigError.unreadable(
                    source,
                    "a config variable needs two underscores between section and key",
                    hint=f"Did you mean {fixed!r}?",
                )
            continue  # GENSYN_DEBUG and the like are not settings
        parts = rest.lower().split("__")
        data = _nest(parts, _parse_value(env[name], source))
        layers.append(Layer(source=source, data=data, spell=spell))
    return layers


def override_layer(item: str) -> Layer:
    """The layer of one ``section.key=value`` command-line override."""
    source = f"command line ({item})"
    key, sep, raw = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(parts):
        raise ConfigError.unreadable(
            source,
            "an override is KEY=VALUE with a dotted key",
            hint="Write it like `-o task.commit_interval=5`.",
        )
    return Layer(source=source, data=_nest(parts, _parse_value(raw, source)))


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A range check on one dotted key; ``check(value, whole_config)`` says if it holds."""

    key: str
    check: Callable[[Any, Mapping[str, Any]], bool]
    requirement: str
    choices: tuple[str, ...] = ()


def at_least(key: str, low: int, *, optional: bool = False, below: int | None = None) -> Rule:
    """``key`` >= ``low`` (and < ``below``); None passes when ``optional``."""

    def check(v: Any, _: Mapping[str, Any]) -> bool:
        if v is None:
            return optional
        return v >= low and (below is None or v < below)

    req = f"at least {low}" if below is None else f"in [{low}, {below})"
    return Rule(key, check, req + (" or null" if optional else ""))


def one_of(key: str, choices: Iterable[str]) -> Rule:
    """``key`` is one of ``choices``."""
    options = tuple(choices)
    return Rule(
        key,
        lambda v, _: v in options,
        "one of " + ", ".join(repr(c) for c in options),
        choices=options,
    )


def _field_type(schema: type, key: str) -> Any:
    tp: Any = schema
    for part in key.split("."):
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def describe_type(tp: Any) -> str:
    """Say in words what a schema type accepts (``int | None`` -> "an integer or null")."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(describe_type(a) for a in args)
    origin = typing.get_origin(tp) or tp
    words = {
        type(None): "null",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):
        return "a mapping of settings"
    return words.get(origin, getattr(tp, "__name__", str(tp)))


def _get(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def check_keys(data: Mapping[str, Any], schema: type, layer: Layer, prefix: str = "") -> None:
    """Raise ConfigError for the first key in ``data`` that ``schema`` does not have."""
    hints = typing.get_type_hints(schema)
    for k, value in data.items():
        key = f"{prefix}{k}"
        if k not in hints:
            raise ConfigError.unknown_key(
                key,
                source=layer.source,
                valid=[prefix + name for name in hints],
                line=layer.line_of(key),
                spell=layer.spell,
            )
        tp = hints[k]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError.bad_value(
                    key,
                    value,
                    f"a mapping of its settings ({', '.join(sorted(typing.get_type_hints(tp)))})",
                    source=layer.source,
                    line=layer.line_of(key),
                )
            check_keys(value, tp, layer, prefix=key + ".")


def _omegaconf_error(exc: OmegaConfBaseException, schema: type, layer: Layer) -> ConfigError:
    key = str(getattr(exc, "full_key", "") or "")
    msg = str(getattr(exc, "msg", "") or exc).splitlines()[0]
    if not key or not layer.sets(key):
        return ConfigError.unreadable(layer.source, f"{key or 'a value'}: {msg}")
    value = _get(layer.data, key)
    line = layer.line_of(key)
    if isinstance(exc, InterpolationResolutionError):
        return ConfigError.bad_value(
            key,
            value,
            "an interpolation that resolves",
            source=layer.source,
            line=line,
            hint=f"omegaconf says: {msg}. Fix the ${{...}} reference.",
        )
    tp = _field_type(schema, key)
    hint = ""
    if isinstance(value, float) and tp is not None and int in typing.get_args(tp) + (tp,):
        hint = "Write amounts as whole numbers in base units, e.g. 1000000000000000000."
    if tp is None:
        return ConfigError.bad_value(key, value, f"valid ({msg})", source=layer.source, line=line)
    return ConfigError.bad_value(
        key, value, describe_type(tp), source=layer.source, line=line, hint=hint
    )


def _check_rules(plain: Mapping[str, Any], rules: Iterable[Rule], layer: Layer) -> None:
    for rule in rules:
        value = _get(plain, rule.key)
        if not rule.check(value, plain):
            raise ConfigError.bad_value(
                rule.key,
                value,
                rule.requirement,
                source=layer.source,
                choices=rule.choices,
                line=layer.line_of(rule.key) if layer.sets(rule.key) else None,
            )


def merge_layers(schema: type[T], layers: Iterable[Layer], rules: Iterable[Rule] = ()) -> T:
    """Merge ``layers`` over the defaults of ``schema``, checking each as it lands."""
    rules = tuple(rules)
    merged = OmegaConf.structured(schema)
    for layer in layers:
        check_keys(layer.data, schema, layer)
        try:
            merged = OmegaConf.merge(merged, layer.data)
            plain = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as exc:
            raise _omegaconf_error(exc, schema, layer) from exc
        # the schema is a dataclass, so its container is a dict
        _check_rules(typing.cast(dict[str, Any], plain), rules, layer)
    return typing.cast(T, OmegaConf.to_object(merged))
