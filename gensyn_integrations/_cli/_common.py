"""What every ``gensyn`` subcommand shares: its context, parser helpers and output."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from gensyn_integrations.config import GensynConfig
    from gensyn_integrations.plugins import GensynPluginManager

# argparse has no public name for the table that add_subparsers returns
Commands = argparse._SubParsersAction


@dataclass
class Context:
    """One command's run: its parsed arguments, and the config and plugins, built on demand.

    Handlers take a Context and return the exit status. Loading the config
    or the plugins only when a command asks keeps ``gensyn --help`` and
    ``gensyn ree fingerprint`` working whatever the config says.
    """

    args: argparse.Namespace
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    _config: GensynConfig | None = None
    _pm: GensynPluginManager | None = None

    @property
    def config(self) -> GensynConfig:
        """The merged config: ``--config`` (or ./gensyn.yaml), the environment, ``-o``."""
        if self._config is None:
            from gensyn_integrations.config import load_config

            self._config = load_config(self.args.config, self.args.override, env=self.env)
        return self._config

    @property
    def plugin_manager(self) -> GensynPluginManager:
        """The plugin manager, built-in plugins and third-party ones, configured."""
        if self._pm is None:
            from gensyn_integrations._manager import get_plugin_manager

            self._pm = get_plugin_manager(self.config, env=self.env)
        return self._pm

    def console(self) -> Console:
        """A console on the current stdout, for tables; plain when stdout is not a terminal."""
        # piped output is read by programs: never fold a 64-digit hash to 80 columns
        width = None if sys.stdout.isatty() else 200
        return Console(file=sys.stdout, soft_wrap=True, highlight=False, width=width)

    def print_json(self, obj: Any) -> None:
        """Write ``obj`` as indented JSON on stdout, for scripts."""
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def fail(self, message: str) -> None:
        """Say, in red on stderr, why a check failed."""
        print_error(message)


Handler = Callable[[Context], int]


def print_error(message: str) -> None:
    """One red paragraph on stderr: ``gensyn: error: <message>``."""
    console = Console(file=sys.stderr, soft_wrap=True, highlight=False)
    console.print(Text("gensyn: error: ", style="bold red") + Text(message, style="red"))


def add_group(commands: Commands, name: str, *, help: str, description: str) -> Commands:
    """Add a command group (``gensyn NAME ...``) and return its own subcommand table."""
    parser = commands.add_parser(
        name, help=help, description=description, formatter_class=Formatter
    )
    return parser.add_subparsers(
        title="commands", metavar="COMMAND", dest=f"{name}_command", required=True
    )


def add_command(
    commands: Commands,
    name: str,
    handler: Handler,
    *,
    help: str,
    description: str,
    epilog: str = "",
) -> argparse.ArgumentParser:
    """Add a leaf command that runs ``handler``, and return its parser for arguments."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=Formatter
    )
    parser.set_defaults(handler=handler)
    return parser


class Formatter(argparse.HelpFormatter):
    """Wraps one-line paragraphs, and keeps paragraphs already broken into lines (examples)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in text.split("\n\n"):
            if "\n" in para:
                paragraphs.append("\n".join(indent + line for line in para.splitlines()))
            else:
                paragraphs.append(
                    textwrap.fill(para, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n\n".join(paragraphs)
