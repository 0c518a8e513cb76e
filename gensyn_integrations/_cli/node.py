"""``gensyn solver``, ``gensyn verifier`` and ``gensyn referee``: run a node daemon.

Also the executor child: ``python -m gensyn_integrations._cli.node --exec REQUEST RESULT``
runs one task run with the face's plugin manager, in a process of its own, so
that task code never runs inside a daemon.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gensyn_integrations._cli._common import Commands, Context, add_command

_ROLES = {
    "solver": "claim matching tasks, train them under the REE, commit, reveal and collect",
    "verifier": "re-execute revealed results and challenge wrong ones",
    "referee": "join the referee pool and rule on disputed steps when drawn",
}


def register(commands: Commands) -> None:
    """Add ``gensyn solver``, ``gensyn verifier`` and ``gensyn referee``."""
    from gensyn_integrations._cli._chain import CHAIN_NOTE, UNLOCK_NOTE, add_account_options

    for role, what in _ROLES.items():
        p = add_command(
            commands, role, _run, help=f"run a {role} node: {what}",
            description=f"Run a {role} daemon: watch the chain and {what}. It acts on tasks that "
            "match its policy and REE fingerprint, survives restarts (state in --workdir), "
            "withdraws pending credits when it starts, and uploads its log and any traceback "
            f"as CIDs. Ctrl-C stops it. {CHAIN_NOTE} {UNLOCK_NOTE}",
            epilog=f"examples:\n  gensyn {role} --account alice\n"
            f"  gensyn -o network.rpc_url=http://127.0.0.1:8545 {role} --workdir .gensyn/{role}",
        )  # fmt: skip
        p.set_defaults(role=role)
        add_account_options(p)
        p.add_argument("--workdir", type=Path, default=None,
                       help=f"where the node keeps its state and checkpoints (default .gensyn/{role})")  # fmt: skip
        p.add_argument(
            "--poll", type=float, default=1.0, help="seconds between chain polls (default 1)"
        )
        p.add_argument("--sandbox", choices=("auto", "on", "off"), default="auto",
                       help="run task code in the sandbox (task user, only lo, rlimits, a scratch "
                            "folder): auto where it can be built (root on Linux), on or fail, off "
                            "(default auto)")  # fmt: skip


def _run(ctx: Context) -> int:
    from coordinator.nodes._daemon import ROLES, run_forever, task_executor
    from coordinator.storage import LocalStore
    from gensyn_integrations._cli._chain import connect, load_signer

    _, protocol = connect(ctx)
    account = load_signer(ctx)
    role = ctx.args.role
    workdir = ctx.args.workdir or Path(".gensyn") / role
    executor, how = task_executor(ctx.args.sandbox)
    node = ROLES[role](protocol, account, LocalStore(ctx.config.storage.path), executor, workdir)
    node.log(how)
    ctx.console().print(
        f"{role} {account.address} on {protocol.client.chain_id}; state in {workdir}; {how}; "
        "Ctrl-C stops"
    )
    run_forever(node, poll=ctx.args.poll)
    return 0


def exec_main(argv: list[str]) -> int:
    """The executor child: run the request in ``argv[0]``, write the result to ``argv[1]``."""
    from coordinator.tasks import InProcessExecutor, RunRequest
    from gensyn_integrations._manager import get_plugin_manager

    req = RunRequest.from_json(json.loads(Path(argv[0]).read_text()))
    res = InProcessExecutor(get_plugin_manager()).run(req)
    Path(argv[1]).write_text(json.dumps(res.to_json()))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m gensyn_integrations._cli.node")
    ap.add_argument("--exec", nargs=2, metavar=("REQUEST", "RESULT"), required=True)
    raise SystemExit(exec_main(ap.parse_args().exec))
