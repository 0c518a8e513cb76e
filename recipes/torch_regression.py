"""Train a plain-PyTorch model on the embedded devnet, verified by two replicas.

Starts the devnet (anvil, the contracts, a local store, 2 solver processes and
a referee), posts the job in ``torch_regression_job.py`` with ``replicate:2``,
waits for both replicas to agree and be paid, downloads the final REE
checkpoint (checked against the root committed on chain), loads it into a
local copy of the model, and prints the receipt.

Run: ``python recipes/torch_regression.py [--steps 60]``. Chain time is moved
forward past the challenge window (devnet only) so the run takes a minute,
not the window.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
E18 = 10**18


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--commit-interval", type=int, default=10)
    a = ap.parse_args()

    import torch

    import ree
    from coordinator.chain import SlotState
    from coordinator.devnet import devnet
    from coordinator.storage import LocalStore
    from coordinator.tasks import InProcessExecutor, TaskClient, TaskSpec
    from gensyn_integrations._manager import get_plugin_manager

    job = (HERE / "torch_regression_job.py").read_bytes()
    spec = TaskSpec(
        entry="torch_regression_job:build", code=("torch_regression_job.py",), steps=a.steps,
        batch_size=16, commit_interval=a.commit_interval, policy="replicate:2", budget=100 * E18,
        bond=10 * E18, claim_window=600, work_window=600, reveal_window=600, challenge_window=60,
    )  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="gensyn-recipe-") as tmp,
        devnet(Path(tmp), solvers=2, verifiers=0, referees=1) as dn,
    ):
        print(f"devnet up: {dn.rpc_url}; {len(dn.nodes)} node processes")
        client = TaskClient(dn.protocol, dn.user, LocalStore(dn.store_path),
                            InProcessExecutor(get_plugin_manager()), workdir=Path(tmp) / "client")  # fmt: skip
        tid = client.submit(spec, {"torch_regression_job.py": job})
        print(f"posted task {tid}; waiting for two replicas")

        def move_time() -> None:
            time.sleep(0.5)
            states = [SlotState(dn.protocol.get_slot(tid, i)["state"]) for i in range(2)]
            if SlotState.REVEALED in states:
                dn.client.advance_time(61)

        receipt = client.wait(tid, timeout=600, on_poll=move_time)
        path = client.fetch_result(tid, Path(tmp) / "final.safetensors")
        ck = ree.load_checkpoint(path, expected_root=receipt.final_root)
        model = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        model.load_state_dict({k: v for k, v in ck.tree.subtree("model/").items()})
        x = torch.linspace(-3, 3, 7).unsqueeze(1)
        with torch.no_grad():
            err = (model(x) - torch.sin(x)).abs().max().item()
        print(
            f"outcome {receipt.outcome}; roots agree: {receipt.slots[0].final_root == receipt.slots[1].final_root}"
        )
        print(
            f"paid {receipt.paid / E18:.4f} AI to 2 solvers, fee burned {receipt.fee_burned / E18:.4f} AI"
        )
        print(f"final root {receipt.final_root}; max |model - sin| on 7 points: {err:.3f}")
    return 0 if receipt.outcome == "verified" else 1


if __name__ == "__main__":
    raise SystemExit(main())
