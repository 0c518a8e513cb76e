"""Train a tiny GPT-2 with the Hugging Face Trainer under the REE, and print its trace.

Nothing comes from the hub: the model is built from a config, the tokenizer is a
word list made from ``recipes/data/tiny_corpus.txt``, and ``HF_HUB_OFFLINE=1``
makes any attempt to download fail fast. Attention is the eager kernel, the
simplest and most portable one. Run it (about 15 s on a laptop CPU)::

    python recipes/hf_tiny_gpt2.py --max-steps 10 --save-steps 5 --output-dir runs/gpt2
    python recipes/hf_tiny_gpt2.py --max-steps 10 --resume runs/gpt2/checkpoint-5 \\
        --output-dir runs/gpt2

The last line printed is the trace as JSON (``ree.Trace.from_json`` reads it):
the resumed run prints the same roots as the uninterrupted one.

``--remote`` runs the same job in the client role: ``GensynTrainer(role=
"client").train()`` sends it to the network (the embedded devnet when none is
configured), loads the verified weights into the model and prints the receipt
as the last line; its ``final_root`` equals the last root of a local run::

    python recipes/hf_tiny_gpt2.py --max-steps 4 --remote
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402 - the environment above must be set before transformers loads
from torch.utils.data import Dataset  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402

from gensyn_integrations.transformers import GensynCallback, GensynTrainer  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "data" / "tiny_corpus.txt"
BLOCK = 16


class Blocks(Dataset[dict[str, torch.Tensor]]):
    """The corpus as word ids, cut into fixed blocks of ``BLOCK`` tokens (labels = inputs)."""

    def __init__(self, text: str) -> None:
        words = re.findall(r"\w+|[^\w\s]", text.lower())
        self.vocab = {w: i + 2 for i, w in enumerate(sorted(set(words)))}  # 0 bos, 1 eos
        ids = [self.vocab[w] for w in words]
        n = len(ids) // BLOCK
        self.data = torch.tensor(ids[: n * BLOCK]).view(n, BLOCK)

    def __len__(self) -> int:
        """The number of blocks."""
        return self.data.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Block ``i`` as a causal-LM example."""
        x = self.data[int(i)]
        return {"input_ids": x, "labels": x.clone()}


def build(
    output_dir: str,
    *,
    max_steps: int = 10,
    grad_accum: int = 1,
    save_steps: int = 0,
    commit_interval: int = 1,
    seed: int = 0,
    plain_trainer: bool = False,
    remote: bool = False,
) -> tuple[Any, GensynCallback]:
    """The Trainer and its GensynCallback, ready for ``train()`` (on the network if ``remote``)."""
    dataset = Blocks(CORPUS.read_text(encoding="utf-8"))
    config = GPT2Config(
        vocab_size=len(dataset.vocab) + 2,
        n_positions=BLOCK,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=1,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)  # the initial weights are part of leaf 0: make them a function of seed
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=grad_accum,
        learning_rate=1e-3,
        warmup_steps=2,
        lr_scheduler_type="linear",
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    role = "client" if remote else "executor"
    callback = GensynCallback(role=role, commit_interval=commit_interval, mode="device", threads=1)
    cls = Trainer if plain_trainer else GensynTrainer
    trainer = cls(model=model, args=args, train_dataset=dataset, callbacks=[callback])
    return trainer, callback


def main(argv: Sequence[str] | None = None) -> int:
    """Train (or resume) and print the trace as the last line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", default="runs/hf_tiny_gpt2")
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--save-steps", type=int, default=0)
    p.add_argument("--commit-interval", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plain-trainer", action="store_true", help="Trainer + GensynCallback")
    p.add_argument("--resume", default=None, help="a checkpoint-N folder to resume from")
    p.add_argument("--remote", action="store_true", help="train on the network (client role)")
    a = p.parse_args(argv)
    trainer, callback = build(
        a.output_dir,
        max_steps=a.max_steps,
        grad_accum=a.grad_accum,
        save_steps=a.save_steps,
        commit_interval=a.commit_interval,
        seed=a.seed,
        plain_trainer=a.plain_trainer,
        remote=a.remote,
    )
    if a.remote:
        trainer.train()
        sys.stdout.write(json.dumps(dataclasses.asdict(trainer.receipt), sort_keys=True) + "\n")
        return 0
    if a.resume and a.plain_trainer:
        callback.resume_from = Path(a.resume)
    trainer.train(resume_from_checkpoint=a.resume)
    sys.stdout.write(callback.trace.dumps().decode("utf-8") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
