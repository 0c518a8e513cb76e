"""The ``gensyn`` command line: ``main()`` behind the console script and ``python -m gensyn_integrations``.

Every command group lives in its own module under
:mod:`gensyn_integrations._cli`. A :class:`~gensyn_integrations.errors.GensynError`
is a mistake in the user's input or settings, so it is shown as one red
paragraph and exit status 2, never as a traceback (``--traceback`` or
``GENSYN_DEBUG=1`` shows it). Any other exception is a bug, and its traceback
is shown.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from gensyn_integrations._cli import add_command_groups
from gensyn_integrations._cli._common import Context, Formatter, print_error
from gensyn_integrations.errors import GensynError

__all__ = ["build_parser", "main"]

DEBUG_ENV = "GENSYN_DEBUG"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
Send PyTorch Lightning, Hugging Face Trainer and Accelerate training to a
permissionless network of other people's machines. The work is checked
without trusting the machine that did it, and paid for on an Ethereum chain.

Settings merge, later winning: defaults, gensyn.yaml (or --config),
GENSYN_<SECTION>__<KEY> environment variables, then -o overrides."""

_EPILOG = """\
examples:
  gensyn ree fingerprint                     what makes this machine's numerics
  gensyn ree root runs/step-5 --expect 3fa1...c9
                                             check a checkpoint's state root
  gensyn -o task.commit_interval=5 config show
  gensyn config check gensyn.yaml

exit status: 0 ok, 1 a check failed, 2 bad input or settings.
Run `gensyn COMMAND --help` for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    """The whole ``gensyn`` parser, every command group included."""
    from gensyn_integrations import __version__

    parser = argparse.ArgumentParser(
        prog="gensyn", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=Formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="the config file (default: ./gensyn.yaml if present)",
    )
    parser.add_argument(
        "-o",
        "--override",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="set one setting, e.g. -o task.commit_interval=5 (repeatable; wins over all else)",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help=f"show the traceback of an error too (or set {DEBUG_ENV}=1)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_command_groups(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gensyn`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end here
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE if exc.code else EXIT_OK
    ctx = Context(args)
    try:
        return int(args.handler(ctx))
    except GensynError as exc:
        if args.traceback or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`gensyn config show | head`): not an error of ours
        sys.stderr.close()
        return EXIT_OK
