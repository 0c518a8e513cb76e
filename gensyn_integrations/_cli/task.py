"""``gensyn task``: list, show, fetch and cancel tasks on the configured chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gensyn_integrations._cli._common import Commands, Context, add_command, add_group


def register(commands: Commands) -> None:
    """Add ``gensyn task list|show|fetch|cancel``."""
    from gensyn_integrations._cli._chain import CHAIN_NOTE, add_account_options

    g = add_group(commands, "task", help="list, inspect, fetch and cancel tasks",
                  description=f"Tasks on the chain: state, roots, CIDs, events and payments. {CHAIN_NOTE}")  # fmt: skip
    add_command(
        g,
        "list",
        _list,
        help="a table of every task",
        description="One row per task: client, policy, steps, budget and slot states.",
    )
    show = add_command(
        g,
        "show",
        _show,
        help="one task: slots, roots, CIDs, events, payments",
        description="Everything about one task, from the chain and its events.",
    )
    show.add_argument("task_id", type=int, metavar="ID")
    fetch = add_command(
        g,
        "fetch",
        _fetch,
        help="download the verified final checkpoint",
        description="Download the final REE checkpoint of a paid slot and check "
        "it against the state root committed on chain; exit 1 if it does not match.",
    )
    fetch.add_argument("task_id", type=int, metavar="ID")
    fetch.add_argument(
        "--out", type=Path, default=None, help="file to write (default task-ID.safetensors)"
    )
    cancel = add_command(
        g,
        "cancel",
        _cancel,
        help="cancel a task nobody has claimed",
        description="Cancel an unclaimed task; the escrow becomes your credit (then `gensyn withdraw`).",
    )
    cancel.add_argument("task_id", type=int, metavar="ID")
    add_account_options(cancel)


def _client(ctx: Context, account: Any = None) -> Any:
    from coordinator.tasks import SubprocessExecutor, TaskClient
    from gensyn_integrations._cli._chain import connect
    from gensyn_integrations.plugins import make_store

    _, p = connect(ctx)
    store = make_store(ctx.plugin_manager, ctx.config)  # storage.backend, as the client role's
    return TaskClient(p, account, store, SubprocessExecutor(), workdir=Path(".gensyn") / "client")


def _slot_states(p: Any, tid: int, reps: int) -> str:
    from coordinator.chain import SlotState

    return " ".join(SlotState(p.get_slot(tid, i)["state"]).name for i in range(reps))


def _list(ctx: Context) -> int:
    from rich.table import Table

    c = _client(ctx)
    table = Table("id", "client", "replicas", "spot", "steps", "budget", "slots", "spec CID")
    for tid in range(1, c.p.task_count() + 1):
        t = c.p.get_task(tid)
        q = t["p"]
        table.add_row(str(tid), t["client"], str(q["replicas"]), str(q["spotChecks"]), str(q["totalSteps"]),
                      str(q["budget"]), _slot_states(c.p, tid, q["replicas"]), q["specCid"])  # fmt: skip
    ctx.console().print(table)
    return 0


def _show(ctx: Context) -> int:
    from rich.table import Table

    from coordinator.tasks._client import task_events

    c = _client(ctx)
    tid = ctx.args.task_id
    r = c.receipt(tid)
    con = ctx.console()
    con.print(f"task {tid} · outcome [bold]{r.outcome}[/] · budget {r.budget} · paid {r.paid} · "
              f"fee burned {r.fee_burned} · refunded {r.refunded} · spec {r.spec_cid}")  # fmt: skip
    slots = Table(
        "slot",
        "solver",
        "state",
        "failed",
        "steps",
        "trace root",
        "final root",
        "manifest",
        "result",
    )
    for s in r.slots:
        slots.add_row(str(s.slot), s.solver, s.state, str(s.failed), str(s.steps), s.trace_root,
                      s.final_root, s.manifest_cid, s.result_cid)  # fmt: skip
    con.print(slots)
    events = Table("block", "event", "arguments")
    for e in task_events(c.p, tid):
        args = {
            k: (v.hex() if isinstance(v, bytes) else v) for k, v in e.args.items() if k != "taskId"
        }
        events.add_row(str(e.block_number), e.name, ", ".join(f"{k}={v}" for k, v in args.items()))
    con.print(events)
    return 0


def _fetch(ctx: Context) -> int:
    c = _client(ctx)
    tid = ctx.args.task_id
    out = ctx.args.out or Path(f"task-{tid}.safetensors")
    path = c.fetch_result(tid, out)
    ctx.console().print(
        f"wrote {path}: verified against the committed root {c.receipt(tid).final_root}"
    )
    return 0


def _cancel(ctx: Context) -> int:
    from gensyn_integrations._cli._chain import load_signer

    c = _client(ctx, load_signer(ctx))
    c.cancel(ctx.args.task_id)
    ctx.console().print(
        f"cancelled task {ctx.args.task_id}; the escrow is your credit: `gensyn withdraw`"
    )
    return 0
