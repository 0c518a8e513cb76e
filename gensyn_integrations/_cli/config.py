"""``gensyn config``: show the merged settings, and check a config file."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.text import Text

from gensyn_integrations._cli._common import Commands, Context, add_command, add_group
from gensyn_integrations.config import DEFAULT_CONFIG_FILE, load_config, to_yaml


def register(commands: Commands) -> None:
    """Add ``gensyn config show`` and ``gensyn config check``."""
    config = add_group(
        commands,
        "config",
        help="show or check the settings",
        description="Settings merge, later winning: defaults, gensyn.yaml (or --config), "
        "GENSYN_<SECTION>__<KEY> environment variables, then -o overrides.",
    )
    add_command(
        config,
        "show",
        _show,
        help="print the merged settings as YAML",
        description="Print the settings every gensyn command would use here, as YAML "
        "that can be saved as gensyn.yaml.",
        epilog="examples:\n  gensyn config show\n"
        "  gensyn -o task.commit_interval=5 config show\n"
        "  GENSYN_REE__MODE=strict gensyn config show > gensyn.yaml",
    )
    check = add_command(
        config,
        "check",
        _check,
        help="check a config file, the environment and overrides",
        description="Read the settings and report the first unknown key, wrong type or "
        "value out of range, with where it came from and the nearest valid key.",
        epilog="examples:\n  gensyn config check\n  gensyn config check deploy/gensyn.yaml\n\n"
        "exit status: 0 valid, 2 not valid.",
    )
    check.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        type=Path,
        help=f"the file to check (default: --config, else ./{DEFAULT_CONFIG_FILE} if present)",
    )


def _show(ctx: Context) -> int:
    """Print the merged config."""
    sys.stdout.write(to_yaml(ctx.config))
    return 0


def _check(ctx: Context) -> int:
    """Load the config, which raises ConfigError when it is not valid."""
    path = ctx.args.path or ctx.args.config
    load_config(path, ctx.args.override, env=ctx.env)
    if path is None:
        path = DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else None
    first = f"{str(path)!r}" if path else "the defaults"
    what = f"{first}, the environment and the overrides are valid settings."
    ctx.console().print(Text("ok", style="green") + Text(f": {what}"))
    return 0
