"""The errors of the gensyn_integrations core: config, plugins and command input.

There is one error tree. Its root, :class:`GensynError`, lives in ``ree`` (the
lowest layer, DESIGN.md "Layers") and is re-exported here. Every leaf also
inherits the builtin it stands for, the way web3.py's
``Web3ValueError(Web3Exception, ValueError)`` does, so code that catches
``ValueError`` keeps working. A message says what was wrong, with the value,
and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

import pluggy

from ree._errors import GensynError

__all__ = [
    "ConfigError",
    "GensynError",
    "PluginError",
    "PluginValidationError",
    "UsageError",
    "nearest",
]


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (difflib ratio >= 0.6), or None.

    Used to say "did you mean ...?" for a mistyped key, value or hook name.
    """
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


class ConfigError(GensynError, ValueError):
    """A setting is unknown, of the wrong type, out of range, or its file is unreadable.

    Attributes:
        key: the dotted key at fault (``"task.commit_interval"``), or None when
            the whole source is at fault (a malformed file).
        source: where the value came from: a file path, ``"environment
            (GENSYN_TASK__BUDGET)"`` or ``"command line (task.budget=5)"``.
        suggestion: the nearest valid key (for an unknown key) or value (for a
            value outside a fixed set), or None.
        line: the 1-based line in the file, when known.

    The message is built by the classmethods below, so every message names
    the key, the source and the suggestion in the same way. The constructor
    takes the finished message, which keeps the error picklable.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        source: str | None = None,
        suggestion: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.source = source
        self.suggestion = suggestion
        self.line = line

    @staticmethod
    def _where(source: str | None, line: int | None) -> str:
        if source is None:
            return ""
        return f"{source}, line {line}: " if line is not None else f"{source}: "

    @classmethod
    def unknown_key(
        cls,
        key: str,
        *,
        source: str,
        valid: Iterable[str],
        line: int | None = None,
        spell: Callable[[str], str] = str,
    ) -> ConfigError:
        """An unknown key. ``valid`` are the full dotted keys allowed at that place.

        ``spell`` writes a dotted key the way the source spells it (as an
        environment variable name, for example), so the suggestion can be
        pasted back.
        """
        valid = sorted(valid)
        # compare last parts only: a shared "task." prefix makes any two keys look alike
        by_leaf = {v.rpartition(".")[2]: v for v in valid}
        leaf = nearest(key.rpartition(".")[2], by_leaf)
        suggestion = by_leaf[leaf] if leaf is not None else None
        msg = f"{cls._where(source, line)}unknown key {spell(key)!r}."
        if suggestion is not None:
            msg += f" Did you mean {spell(suggestion)!r}?"
        msg += f" Valid keys here: {', '.join(spell(k) for k in valid)}."
        msg += " Fix the key, or remove it."
        return cls(msg, key=key, source=source, suggestion=suggestion, line=line)

    @classmethod
    def bad_value(
        cls,
        key: str,
        value: object,
        requirement: str,
        *,
        source: str,
        choices: Iterable[str] = (),
        line: int | None = None,
        hint: str = "",
    ) -> ConfigError:
        """A value of the wrong type or outside its range. ``requirement`` says what it must be."""
        suggestion = nearest(str(value), choices) if choices else None
        msg = f"{cls._where(source, line)}{key} is {value!r}, but it must be {requirement}."
        if suggestion is not None:
            msg += f" Did you mean {suggestion!r}?"
        msg += f" {hint or 'Change the value.'}"
        return cls(msg, key=key, source=source, suggestion=suggestion, line=line)

    @classmethod
    def unreadable(
        cls, source: str, problem: str, *, line: int | None = None, hint: str = ""
    ) -> ConfigError:
        """A whole source (file, environment variable, override) cannot be read."""
        msg = f"{cls._where(source, line)}{problem}."
        msg += f" {hint or 'Fix the file and run `gensyn config check` again.'}"
        return cls(msg, source=source, line=line)


class PluginError(GensynError, RuntimeError):
    """A plugin could not be loaded or used (an import failure, a clash of names)."""


class PluginValidationError(PluginError, pluggy.PluginValidationError):
    """A plugin implements an unknown hook, or a hook with a signature its spec lacks.

    It is also pluggy's :class:`pluggy.PluginValidationError`, with pluggy's
    constructor ``(plugin, message)``, so code written against pluggy catches it.
    """

    def __init__(self, plugin: object, message: str) -> None:
        pluggy.PluginValidationError.__init__(self, plugin, message)


class UsageError(GensynError, ValueError):
    """A command was given input it cannot use: a missing file, a malformed argument."""
