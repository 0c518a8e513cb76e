"""A tiny GPT-2 job for the client-role tests: built from a config, nothing downloaded."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

VOCAB, BLOCK = 48, 8


class Tokens(Dataset[dict[str, torch.Tensor]]):
    """``n`` fixed blocks of token ids (labels = inputs), a function of ``seed`` alone."""

    def __init__(self, n: int = 20, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.data = torch.randint(2, VOCAB, (n, BLOCK), generator=g)

    def __len__(self) -> int:
        """The number of blocks."""
        return self.data.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Block ``i`` as a causal-LM example."""
        x = self.data[int(i)]
        return {"input_ids": x, "labels": x.clone()}


class Bomb(GPT2LMHeadModel):  # type: ignore[misc]
    """A GPT-2 whose third training forward raises: user code failing, the same way everywhere."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.calls = 0

    def forward(self, input_ids: Any = None, labels: Any = None, **kwargs: Any) -> Any:
        """GPT-2's forward, until the third call in training mode."""
        if self.training:
            self.calls += 1
            if self.calls == 3:
                raise ValueError("boom in the third forward")
        return super().forward(input_ids=input_ids, labels=labels, **kwargs)


def model(seed: int = 0) -> Any:
    """A 1-layer GPT-2 with eager attention; its initial weights are a function of ``seed``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=BLOCK, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=0, eos_token_id=1)  # fmt: skip
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def args(out: str, **kw: Any) -> Any:
    """TrainingArguments of a few AdamW steps with warmup and a linear schedule."""
    from transformers import TrainingArguments

    base: dict[str, Any] = {
        "output_dir": out, "max_steps": 6, "per_device_train_batch_size": 4, "learning_rate": 1e-2,
        "warmup_steps": 2, "lr_scheduler_type": "linear", "weight_decay": 0.01, "seed": 5,
        "save_strategy": "no", "logging_strategy": "no", "report_to": "none", "use_cpu": True,
        "disable_tqdm": True, "dataloader_num_workers": 0,
    }  # fmt: skip
    base.update(kw)
    return TrainingArguments(**base)


def trainer(
    out: str,
    *,
    role: str = "executor",
    commit_interval: int = 2,
    eval_dataset: Any = None,
    **kw: Any,
) -> Any:
    """A GensynTrainer over :class:`Tokens` in ``role``; ``kw`` go to the TrainingArguments."""
    from transformers.data.data_collator import default_data_collator

    from gensyn_integrations.transformers import GensynCallback, GensynTrainer

    cb = GensynCallback(role=role, commit_interval=commit_interval, mode="device", threads=1)
    return GensynTrainer(model=model(), args=args(out, **kw), train_dataset=Tokens(),
                         eval_dataset=eval_dataset, data_collator=default_data_collator, callbacks=[cb])  # fmt: skip
