"""``gensyn launch``: a drop-in for ``accelerate launch`` that reads gensyn.yaml."""

from __future__ import annotations

import argparse

from gensyn_integrations._cli._common import Commands, Context, Formatter


def register(commands: Commands) -> None:
    """Add ``gensyn launch [--config PATH] SCRIPT [ARGS...]``."""
    parser = commands.add_parser(
        "launch",
        help="run a training script with accelerate, configured by gensyn.yaml",
        description="Run SCRIPT on every rank with `accelerate launch`. The `accelerate:` "
        "section of the config goes to accelerate as its --config_file; every other setting "
        "reaches each rank as GENSYN_<SECTION>__<KEY> variables. accelerate itself refuses "
        "--config and unknown keys, which is why this command exists.",
        epilog="examples:\n  gensyn launch --config gensyn.yaml train.py --epochs 3\n"
        "  gensyn launch --dry-run train.py        show the command and variables\n\n"
        "exit status: the script's, or 2 for a bad config or a missing script.",
        formatter_class=Formatter,
    )
    parser.set_defaults(handler=_launch)
    parser.add_argument(
        "--config",
        dest="launch_config",
        metavar="PATH",
        help="the gensyn config (default: the global --config, else ./gensyn.yaml if present)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the variables, the accelerate config and the command; run nothing",
    )
    parser.add_argument("script", metavar="SCRIPT", help="the training script")
    parser.add_argument(
        "script_args", metavar="ARGS", nargs=argparse.REMAINDER, help="arguments for SCRIPT"
    )


def _launch(ctx: Context) -> int:
    """Check the config and the script, then hand over to accelerate."""
    from gensyn_integrations._accel.launch import launch

    args = ctx.args
    return launch(
        args.launch_config or args.config,
        args.override,
        ctx.env,
        args.script,
        args.script_args,
        dry_run=args.dry_run,
    )
