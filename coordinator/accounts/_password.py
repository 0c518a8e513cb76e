"""Where a keystore password comes from: the environment, a file, or a hidden prompt.

Never a command-line argument: arguments show in ``ps`` and in shell history.
Daemons and scripts set ``GENSYN_PASSWORD_FILE`` (or ``GENSYN_PASSWORD``); a
person at a terminal is prompted.
"""

from __future__ import annotations

import getpass
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from coordinator.accounts._errors import PasswordError

__all__ = ["PASSWORD_ENV", "PASSWORD_FILE_ENV", "read_password"]

PASSWORD_ENV = "GENSYN_PASSWORD"  # noqa: S105 - the variable's name, not a password
PASSWORD_FILE_ENV = "GENSYN_PASSWORD_FILE"  # noqa: S105 - the variable's name, not a password


def read_password(
    what: str = "the keystore",
    *,
    confirm: bool = False,
    env: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
) -> str:
    """The password for ``what``: from ``GENSYN_PASSWORD``, ``GENSYN_PASSWORD_FILE``, or a prompt.

    ``confirm`` (for a new keystore) asks twice at a prompt and refuses an empty
    password. ``prompt`` defaults to :func:`getpass.getpass`, looked up when called.
    """
    env = os.environ if env is None else env
    if PASSWORD_ENV in env and PASSWORD_FILE_ENV in env:
        raise PasswordError(
            f"both {PASSWORD_ENV} and {PASSWORD_FILE_ENV} are set; unset one of them"
        )
    if PASSWORD_ENV in env:
        password, source = env[PASSWORD_ENV], f"${PASSWORD_ENV}"
    elif PASSWORD_FILE_ENV in env:
        password, source = _from_file(Path(env[PASSWORD_FILE_ENV])), f"${PASSWORD_FILE_ENV}"
    else:
        password, source = _from_prompt(what, confirm, prompt or getpass.getpass), "the prompt"
    if confirm and not password:
        raise PasswordError(
            f"the password from {source} is empty; a keystore needs a non-empty password"
        )
    return password


def _from_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordError(
            f"cannot read the password file {str(path)!r} named by ${PASSWORD_FILE_ENV} ({exc}); "
            "fix the path or the file's permissions"
        ) from exc
    # editors end a file with a newline; it is not part of the password
    return text.removesuffix("\n").removesuffix("\r")


def _from_prompt(what: str, confirm: bool, prompt: Callable[[str], str]) -> str:
    no_terminal = PasswordError(
        f"no password for {what}: there is no terminal to prompt on; "
        f"set {PASSWORD_FILE_ENV} to a file holding the password (or {PASSWORD_ENV})"
    )
    try:
        with warnings.catch_warnings():
            # getpass falls back to echoing stdin when there is no terminal: refuse that
            warnings.simplefilter("error", getpass.GetPassWarning)
            first = prompt(f"Password for {what}: ")
            if confirm:
                again = prompt("Repeat the password: ")
                if again != first:
                    raise PasswordError("the two passwords differ; run the command again")
    except (EOFError, getpass.GetPassWarning):
        raise no_terminal from None
    return first
