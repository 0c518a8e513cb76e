"""A GPT-2 for the op-trace tests whose step reads a tensor outside its state: it cannot be traced."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2LMHeadModel


class Hidden(GPT2LMHeadModel):  # type: ignore[misc]
    """GPT-2 whose training loss also reads a non-persistent buffer (not in its state_dict, nor any root)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        table = torch.arange(8 * config.vocab_size, dtype=torch.float32).reshape(8, -1) * 1e-3
        self.register_buffer("table", table, persistent=False)

    def forward(self, input_ids: Any = None, labels: Any = None, **kwargs: Any) -> Any:
        """GPT-2's forward, its loss plus zero times a sum over the buffer."""
        out = super().forward(input_ids=input_ids, labels=labels, **kwargs)
        if out.loss is not None:
            out.loss = out.loss + 0.0 * self.table.sum()
        return out
