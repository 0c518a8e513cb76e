"""``gensyn ree``: inspect the Reproducible Execution Environment of this machine and its files."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from rich.table import Table

from gensyn_integrations._cli._common import Commands, Context, add_command, add_group
from gensyn_integrations.errors import UsageError

_ROOT = re.compile(r"^[0-9a-f]{64}$")


def register(commands: Commands) -> None:
    """Add ``gensyn ree fingerprint`` and ``gensyn ree root``."""
    ree = add_group(
        commands,
        "ree",
        help="the Reproducible Execution Environment: fingerprints and state roots",
        description="Inspect the Reproducible Execution Environment (REE): what makes this "
        "machine's numerics, and the state root of REE checkpoints.",
    )
    fp = add_command(
        ree,
        "fingerprint",
        _fingerprint,
        help="show what on this machine changes numerical results",
        description="Show the REE fingerprint: every library version, device and setting "
        "that changes numerical results, and its stable hash. In device mode, solvers, "
        "verifiers and referees must match a task's fingerprint exactly.",
        epilog="examples:\n  gensyn ree fingerprint\n  gensyn ree fingerprint --json | jq -r .hash",
    )
    fp.add_argument("--json", action="store_true", help="print JSON instead of a table")

    root = add_command(
        ree,
        "root",
        _root,
        help="print the state root of an REE checkpoint",
        description="Load an REE checkpoint (safetensors plus canonical JSON; never a pickle) "
        "and print the Merkle root of its state. With --expect, exit 1 unless it matches.",
        epilog="examples:\n  gensyn ree root runs/step-5\n"
        "  gensyn ree root runs/step-5 --expect 3fa1...c9 && echo verified\n\n"
        "exit status: 0 the root was printed (and matches), 1 it does not match, "
        "2 the checkpoint cannot be read.",
    )
    root.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="the checkpoint to hash")
    root.add_argument(
        "--expect",
        metavar="ROOT",
        type=_hex_root,
        help="the root it must have: 64 hex digits, with or without 0x",
    )
    root.add_argument("--json", action="store_true", help="print JSON instead of the bare root")


def _hex_root(text: str) -> str:
    root = text.strip().lower().removeprefix("0x")
    if not _ROOT.match(root):
        raise argparse.ArgumentTypeError(f"a state root is 64 hex digits, not {text!r}")
    return root


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key in sorted(data):
        value = data[key]
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, str):
            rows.append((prefix + key, value))
        else:
            rows.append((prefix + key, json.dumps(value, default=str)))
    return rows


def _fingerprint(ctx: Context) -> int:
    """Print the fingerprint as a table, or as JSON."""
    import ree

    # The fingerprint names the settings a run trains under (threads, CUBLAS workspace...),
    # so take it inside the REE, as a solver would.
    with ree.deterministic(mode="device", seed=0):
        fp: dict[str, Any] = dict(ree.fingerprint())
    if ctx.args.json:
        ctx.print_json(fp)
        return 0
    table = Table(title="REE fingerprint", show_header=True, header_style="bold")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    for key, value in _flatten({k: v for k, v in fp.items() if k != "hash"}):
        table.add_row(key, value)
    table.add_section()
    table.add_row("hash", str(fp.get("hash")), style="bold")
    ctx.console().print(table)
    return 0


def _root(ctx: Context) -> int:
    """Print a checkpoint's state root; exit 1 when it differs from --expect."""
    path: Path = ctx.args.checkpoint
    expect: str | None = ctx.args.expect
    if not path.exists():
        raise UsageError(
            f"There is no checkpoint at {str(path)!r}. Pass the path of an REE checkpoint."
        )

    import ree

    tree = ree.load_checkpoint(path).tree
    root = str(tree.root).lower().removeprefix("0x")
    match = None if expect is None else root == expect
    if ctx.args.json:
        ctx.print_json(
            {
                "checkpoint": str(path),
                "root": root,
                "leaves": tree.n,
                "expected": expect,
                "match": match,
            }
        )
    else:
        print(root)
    if match is False:
        ctx.fail(
            f"the state root of {str(path)!r} is {root}, not the expected {expect}. "
            "The checkpoint holds other state than the one expected: do not use it."
        )
        return 1
    return 0
