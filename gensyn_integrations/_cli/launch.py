"""``gensyn launch``: a drop-in for ``accelerate launch`` that reads gensyn.yaml.

With ``--remote`` it is the client role instead: the script goes to the network
(:mod:`gensyn_integrations._accel.remote`) and the verified final REE
checkpoint comes back.
"""

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
        "  gensyn launch --dry-run train.py        show the command and variables\n"
        "  gensyn launch --remote --steps 12 train.py --max-steps 12   train on the network\n"
        "  gensyn launch --remote --task-id 7 train.py   re-attach to task 7 (a configured network)\n\n"
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
    remote = parser.add_argument_group(
        "client role",
        "--remote sends SCRIPT to the network (the embedded devnet when network.rpc_url is not "
        "set): a solver runs it on one rank and the verified final REE checkpoint comes back.",
    )
    remote.add_argument("--remote", action="store_true", help="run SCRIPT on the network")
    remote.add_argument(
        "--steps", type=int, default=0, metavar="N",
        help="the task's optimizer steps (required with --remote; the script must run at least N)",
    )  # fmt: skip
    remote.add_argument(
        "--result", default="gensyn-result.safetensors", metavar="PATH",
        help="where the verified final REE checkpoint goes (default gensyn-result.safetensors)",
    )  # fmt: skip
    remote.add_argument(
        "--ship", action="append", default=[], metavar="FILE",
        help="a file the script reads from its working folder (repeatable)",
    )  # fmt: skip
    remote.add_argument(
        "--timeout", type=float, default=600.0, metavar="S",
        help="seconds to wait for the task to settle (default 600)",
    )  # fmt: skip
    remote.add_argument(
        "--task-id", type=int, default=None, metavar="N",
        help="re-attach to task N, already posted (on a configured network), instead of posting; "
        "nothing is shipped, --steps is not needed",
    )  # fmt: skip
    remote.add_argument(
        "--retries", type=int, default=0, metavar="K",
        help="post the task again, up to K times, when every slot was slashed or expired "
        "(the refund stays market credit: `gensyn withdraw`; default 0)",
    )  # fmt: skip
    parser.add_argument("script", metavar="SCRIPT", help="the training script")
    parser.add_argument(
        "script_args", metavar="ARGS", nargs=argparse.REMAINDER, help="arguments for SCRIPT"
    )


def _launch(ctx: Context) -> int:
    """Check the config and the script, then hand over to accelerate."""
    from gensyn_integrations._accel.launch import launch
    from gensyn_integrations.errors import UsageError

    args = ctx.args
    if args.remote:
        return _launch_remote(ctx)
    for flag, value in (("--task-id", args.task_id), ("--retries", args.retries or None)):
        if value is not None:
            raise UsageError(f"{flag} is a setting of the remote task; it needs --remote")
    return launch(
        args.launch_config or args.config,
        args.override,
        ctx.env,
        args.script,
        args.script_args,
        dry_run=args.dry_run,
    )


def _launch_remote(ctx: Context) -> int:
    """Check the config and the script, send it to the network, write the verified checkpoint."""
    from gensyn_integrations._accel.launch import prepare
    from gensyn_integrations._accel.remote import launch_remote, print_receipt
    from gensyn_integrations.errors import UsageError

    args = ctx.args
    if args.dry_run:
        raise UsageError("--dry-run shows a local launch; it does not combine with --remote")
    cfg, _ = prepare(args.launch_config or args.config, args.override, ctx.env, args.script)
    receipt = launch_remote(
        cfg, args.script, args.script_args, steps=args.steps, result=args.result,
        ship=args.ship, timeout=args.timeout, task_id=args.task_id, retries=args.retries,
    )  # fmt: skip
    print_receipt(receipt)
    return 0
