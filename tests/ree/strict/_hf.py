"""A tiny Hugging Face GPT-2 (eager attention, built from a config, nothing downloaded) as a workload."""

from __future__ import annotations

import os

import torch

from ree.strict import Workload
from ree.strict._rng import StrictGenerator

VOCAB, CTX, BATCH = 64, 8, 4


def hf_gpt2_workload(device: str = "cpu") -> Workload:
    """GPT-2 with 2 layers of width 16, dropout 0.1 everywhere, AdamW, LM loss."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # the config's loss_type notice is not about this code
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)

    def tokens(g: StrictGenerator) -> tuple[torch.Tensor, torch.Tensor]:
        ids = (g.bits(BATCH * CTX, device) % VOCAB).reshape(BATCH, CTX)
        return ids, ids

    return Workload(model, opt, tokens, lambda m, x, y: m(input_ids=x, labels=y).loss)
