"""Shipping a script's code: the __main__ file, the local modules it imports, a local package; dry run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TRAIN = '''
import json

import lightning.pytorch as pl
import torch
from mymodels import Body

from localpkg.data import PairData


class ScriptNet(pl.LightningModule):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.body = Body(width)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.body(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    from gensyn_integrations._lightning.client import build_job
    from gensyn_integrations.lightning import GensynStrategy

    strategy = GensynStrategy(dry_run=True)
    trainer = pl.Trainer(strategy=strategy, max_steps=3, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    model, data = ScriptNet(), PairData()
    spec, files = build_job(strategy, trainer, model, None, data)
    print("FILES", json.dumps(sorted(n for n in files if n.endswith(".py"))))
    print("REFS", json.dumps([spec.init_args["module"], spec.init_args["datamodule"]]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(model, data)
    assert strategy.receipt is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained here
    print("LOSS", repr(strategy.estimate.first_loss), strategy.estimate.escrow)
'''

FILES = {
    "train.py": TRAIN,
    "mymodels.py": """
        import torch
        from helpers import squash

        class Body(torch.nn.Module):
            def __init__(self, width):
                super().__init__()
                self.a, self.b = torch.nn.Linear(2, width), torch.nn.Linear(width, 1)

            def forward(self, x):
                return self.b(squash(self.a(x)))
        """,
    "helpers.py": """
        import torch

        def squash(x):
            return torch.tanh(x)
        """,
    "unused.py": "raise RuntimeError('never shipped, never imported')\n",
    "localpkg/__init__.py": "",
    "localpkg/data.py": """
        import lightning.pytorch as pl
        from torch.utils.data import DataLoader, TensorDataset

        from .util import pairs

        class PairData(pl.LightningDataModule):
            def train_dataloader(self):
                return DataLoader(TensorDataset(*pairs(32)), batch_size=8)
        """,
    "localpkg/util.py": """
        import torch

        def pairs(n):
            x = torch.linspace(-1, 1, 2 * n).reshape(n, 2)
            return x, x.sum(dim=1, keepdim=True)
        """,
}


@pytest.mark.slow
def test_a_script_ships_its_local_modules_and_package_and_dry_runs_in_a_clean_process(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    for name, text in FILES.items():
        (proj / name).parent.mkdir(parents=True, exist_ok=True)
        (proj / name).write_text(textwrap.dedent(text))
    out = subprocess.run(  # noqa: S603 - our interpreter, the test's own script
        [sys.executable, "train.py"], cwd=proj, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.stdout.splitlines() if " " in line}
    assert json.loads(lines["FILES"]) == [
        "helpers.py", "localpkg/__init__.py", "localpkg/data.py", "localpkg/util.py", "mymodels.py", "train.py",
    ]  # fmt: skip
    module, datamodule = json.loads(lines["REFS"])
    assert module == {"file": "train.py", "qualname": "ScriptNet", "hparams": {"width": 8}}
    assert datamodule == {"module": "localpkg.data", "qualname": "PairData", "hparams": {}}
    loss, escrow = lines["LOSS"].split()
    assert float(loss) > 0  # step 1 ran where only the bundle's copy of the code could be imported
    assert int(escrow) == 10**18
    assert "Nothing was paid and no chain was touched" in out.stdout
