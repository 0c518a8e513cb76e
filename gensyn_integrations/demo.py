"""``make demo``: the most complete job the project runs today, end to end, on this machine.

1. A Lightning job (Adam, dropout, a shuffled DataLoader, StepLR) trains under the
   REE with :class:`GensynTraceCallback`: a state root every ``commit_interval``
   steps, REE checkpoints (safetensors, no pickles) at every root.
2. A verifier re-executes the whole job: every root must match, bit for bit.
3. A spot check: one interval is re-run from its starting checkpoint in a fresh
   process, and its end root is proven against the trace root with a Merkle proof.
4. A tampered checkpoint is refused, and so is a pickle.

Run ``python -m gensyn_integrations.demo --help`` for the knobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _job(steps: int, commit_interval: int, checkpoint_dir: Path | None, resume: str | None,
         progress: bool) -> Any:
    """Train the demo model; return the trace callback."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from gensyn_integrations.lightning import GensynTraceCallback

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 4)
            )

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self) -> Any:
            opt = torch.optim.Adam(self.parameters(), lr=3e-3)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=8, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    g = torch.Generator().manual_seed(7)
    x = torch.randn(512, 16, generator=g)
    y = (x[:, :4].argmax(dim=1)).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    cb = GensynTraceCallback(commit_interval=commit_interval, seed=0, checkpoint_dir=checkpoint_dir)
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=progress, callbacks=[cb],
    )
    trainer.fit(Classifier(), train_dataloaders=loader, ckpt_path=resume)
    return cb


def _quiet_lightning() -> None:
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401 - it sets its loggers' levels on import; override after

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gensyn_integrations.demo",
        description="Train a Lightning job under the REE, re-verify it, spot-check an interval "
        "from its checkpoint in a fresh process, and show that tampering is caught.",
    )
    p.add_argument("--steps", type=int, default=32, help="optimizer steps (default 32)")
    p.add_argument("--commit-interval", type=int, default=8, help="steps per trace root (default 8)")
    p.add_argument("--workdir", type=Path, help="keep checkpoints here (default: a temporary folder)")
    p.add_argument("--_interval", nargs=2, help=argparse.SUPPRESS)  # child: resume CKPT, run to STEP
    a = p.parse_args(argv)
    _quiet_lightning()
    if a._interval:
        ckpt, end = a._interval
        cb = _job(int(end), a.commit_interval, None, ckpt, progress=False)
        print(json.dumps(cb.trace.to_json()))
        return 0
    con = Console()
    with tempfile.TemporaryDirectory(prefix="gensyn-demo-") as tmp:
        return _demo(con, a.steps, a.commit_interval, a.workdir or Path(tmp))


def _demo(con: Console, steps: int, ci: int, workdir: Path) -> int:
    import ree

    con.rule("[bold]gensyn-integrations demo")
    with ree.deterministic(mode="device", seed=0):
        fp = ree.fingerprint()
    con.print(f"REE fingerprint [cyan]{fp['hash'][:16]}…[/] (torch {fp['torch']['version']}, CPU capability {fp['torch']['cpu_capability']}); "
              f"device mode, seed 0, commit_interval {ci}")

    con.print(f"\n[bold]1. The solver trains[/] {steps} steps and commits a trace")
    t0 = time.perf_counter()
    solver = _job(steps, ci, workdir / "solver", None, progress=True)
    t_train = time.perf_counter() - t0
    trace = solver.trace
    table = Table("leaf", "step", "state root", "checkpoint")
    for i, (s, r) in enumerate(zip(trace.steps, trace.roots, strict=True)):
        ck = workdir / "solver" / f"step-{s:08d}.safetensors"
        table.add_row(str(i), str(s), r, ck.name if ck.exists() else "-")
    con.print(table)
    con.print(f"trace root [green]{trace.root}[/] over N = {trace.n} roots ({t_train:.1f}s)")

    con.print("\n[bold]2. A verifier replays the whole job[/]")
    replay = _job(steps, ci, None, None, progress=False)
    same = replay.trace.roots == trace.roots
    con.print("[green]every root matches, bit for bit[/]" if same else "[red]roots differ[/]")

    k = max(1, trace.n // 2)
    start_step, end_step = trace.steps[k - 1], trace.steps[k]
    con.print(f"\n[bold]3. Spot check[/]: interval {k} (steps {start_step}→{end_step}), "
              "from its checkpoint, in a fresh process")
    start_ckpt = workdir / "solver" / f"step-{start_step:08d}.safetensors"
    if start_step == 0:
        con.print("(interval 1 starts from the initial state: replay above covers it)")
        spot_ok = same
    else:
        loaded = ree.load_checkpoint(start_ckpt, expected_root=trace.roots[k - 1])
        con.print(f"checkpoint {start_ckpt.name}: root {loaded.root[:16]}… matches trace leaf {k - 1}")
        out = subprocess.run(
            [sys.executable, "-m", "gensyn_integrations.demo", "--commit-interval", str(ci),
             "--_interval", str(start_ckpt), str(end_step)],
            capture_output=True, text=True, check=False, env={**os.environ},
        )
        if out.returncode != 0:
            con.print(f"[red]spot check failed to run[/]\n{out.stderr[-2000:]}")
            return 1
        child = ree.Trace.from_json(out.stdout.strip().splitlines()[-1])
        claimed = child.roots[k]
        proof = trace.proof(k)
        proven = ree.verify_proof(bytes.fromhex(trace.root), proof) and \
            proof.leaf_hash == hashlib.sha256(bytes.fromhex(claimed)).digest()
        spot_ok = proven and claimed == trace.roots[k]
        con.print(f"re-executed end root {claimed[:16]}… "
                  + ("[green]equals the committed root, proven against the trace root[/]"
                     if spot_ok else "[red]disagrees: a dispute would open here[/]"))

    con.print("\n[bold]4. Bad input is refused[/]")
    final_ckpt = workdir / "solver" / f"step-{trace.steps[-1]:08d}.safetensors"
    tampered = workdir / "tampered.safetensors"
    raw = bytearray(final_ckpt.read_bytes())
    raw[-5] ^= 0x01
    tampered.write_bytes(bytes(raw))
    for path, what in ((tampered, "a checkpoint with one flipped bit"),
                       (_planted_pickle(workdir), "a pickle posing as a checkpoint")):
        try:
            ree.load_checkpoint(path, expected_root=trace.roots[-1])
            con.print(f"[red]{what} was accepted[/]")
            return 1
        except ree.CheckpointError as e:
            con.print(f"{what}: [yellow]{type(e).__name__}[/]: {str(e)[:110]}…")

    ok = same and spot_ok
    con.rule("[bold green]demo passed" if ok else "[bold red]demo failed")
    return 0 if ok else 1


def _planted_pickle(workdir: Path) -> Path:
    path = workdir / "evil.safetensors"
    # protocol-2 pickle header bytes; never unpickled by anything here
    path.write_bytes(b"\x80\x02}q\x00X\x05\x00\x00\x00stateq\x01.")
    return path


if __name__ == "__main__":
    sys.exit(main())
