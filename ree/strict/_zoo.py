"""Reference workloads: four tiny models whose strict-mode roots are committed.

Any machine can train them and compare its roots with the golden ones, which is
how a solver or referee checks that its device reproduces strict mode
(``bench/strict_gpu_check.py``). They need only torch. Initial weights and data
come from the strict generator, never from torch's generators, whose normal and
uniform draws differ between vector ISAs.

Models: ``mlp`` (SGD with momentum), ``cnn`` (two convolutions, Adam), ``mha``
(``nn.MultiheadAttention``, GELU, LayerNorm, dropout, AdamW) and ``gpt`` (a
GPT-2 block in plain torch: tied embeddings, causal attention, tanh GELU,
dropout, AdamW) and ``bncnn`` (batch norm with running stats, grouped, depthwise
and transposed convolutions, SGD with Nesterov momentum and weight decay).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ree.strict._mode import StrictMode
from ree.strict._rng import StrictGenerator

__all__ = [
    "MODELS",
    "Workload",
    "build",
    "reference_roots",
    "reinit",
    "train_root",
    "train_workload",
]

MODELS = ("mlp", "cnn", "mha", "gpt", "bncnn")
STEPS = 20
BATCH = 4


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(16, 32),
            nn.Tanh(),
            nn.Linear(32, 32),
            nn.GELU(approximate="tanh"),
            nn.Linear(32, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(x))
        h = torch.sigmoid(self.c2(h))
        return self.head(h.flatten(1))


class _BNCNN(nn.Module):
    """Batch norm between grouped, depthwise and transposed convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2)
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.c1(x)))
        h = self.bn2(self.depthwise(self.grouped(h)))
        h = torch.tanh(self.up(torch.relu(h)))
        return self.head(h.mean((2, 3)))


class _MHABlock(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, dropout=0.1, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(0.1), nn.Linear(4 * d, d)
        )
        self.head = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.ff(self.ln2(x))
        return self.head(x.mean(1))


class _GPTBlock(nn.Module):
    """One GPT-2 block, written as HF's eager GPT-2 computes it."""

    def __init__(self, d: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(0.1)
        self.register_buffer(
            "mask", torch.ones(ctx, ctx, dtype=torch.bool).tril(), persistent=False
        )

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        att = att.masked_fill(~self.mask[:t, :t], torch.finfo(att.dtype).min)
        att = self.drop(torch.softmax(att, dim=-1))
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        return self.drop(self.c_proj(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attn(self.ln_1(x))
        h = nn.functional.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.drop(self.mlp_proj(h))


class _GPT(nn.Module):
    def __init__(
        self, vocab: int = 64, d: int = 16, heads: int = 2, ctx: int = 8, layers: int = 2
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(_GPTBlock(d, heads, ctx) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = torch.matmul(self.ln_f(x), self.wte.weight.t())  # tied head
        return nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )


@dataclass
class Workload:
    """A model, its optimizer, a batch maker and its loss, ready to train on one device."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batch: Callable[[StrictGenerator], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def reinit(model: nn.Module, gen: StrictGenerator) -> None:
    """Overwrite every parameter from ``gen``: weights uniform in +-1/sqrt(fan_in), the rest 0 or 1.

    Runs under strict mode, so it is the same on every device.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                bound = 1.0 / math.sqrt(p[0].numel())
                p.copy_(gen.uniform(tuple(p.shape), p.device) * (2 * bound) - bound)
            elif name.endswith("weight") and ("ln" in name or "bn" in name):
                p.fill_(1.0)
            else:
                p.copy_(gen.uniform(tuple(p.shape), p.device) * 0.2 - 0.1)


def _classify(
    x: torch.Tensor, y: torch.Tensor
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda m, xb, yb: nn.functional.cross_entropy(m(xb), yb)


def build(name: str, device: torch.device | str) -> Workload:
    """Build workload ``name`` on ``device``; call :func:`reinit` before training it.

    Construction runs torch's own initialisers, so it happens outside strict mode.
    """

    def floats(*shape: int) -> Callable[[StrictGenerator], tuple[torch.Tensor, torch.Tensor]]:
        def make(g: StrictGenerator) -> tuple[torch.Tensor, torch.Tensor]:
            x = g.uniform(shape, device) * 2.0 - 1.0
            y = g.bits(shape[0], device) % 4
            return x, y

        return make

    ce = _classify(torch.empty(0), torch.empty(0))
    model: nn.Module
    if name == "mlp":
        model = _MLP().to(device)
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return Workload(model, opt, floats(BATCH, 16), ce)
    if name == "cnn":
        model = _CNN().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        return Workload(model, opt, floats(BATCH, 1, 8, 8), ce)
    if name == "bncnn":
        model = _BNCNN().to(device)
        opt = torch.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4
        )
        return Workload(model, opt, floats(BATCH, 1, 8, 8), ce)
    if name == "mha":
        model = _MHABlock().to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        return Workload(model, opt, floats(BATCH, 6, 16), ce)
    if name == "gpt":
        model = _GPT().to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)

        def tokens(g: StrictGenerator) -> tuple[torch.Tensor, torch.Tensor]:
            ids = (g.bits(BATCH * 8, device) % 64).reshape(BATCH, 8)
            return ids, ids

        return Workload(model, opt, tokens, lambda m, x, y: m(x))
    raise KeyError(f"unknown reference workload {name!r}; one of {MODELS}")


@contextlib.contextmanager
def _maybe(mode: StrictMode | None) -> Iterator[None]:
    if mode is None:
        yield
    else:
        with mode:
            yield


def train_workload(
    work: Workload, *, steps: int = STEPS, strict: bool = True, seed: int = 0
) -> str:
    """Reinitialise ``work`` from ``seed``, train it ``steps`` steps, return the hex state root.

    ``strict=False`` trains the same initial weights and data with default ops
    (the negative control): initialisation and data still come from the strict
    generator, so only the training ops differ.
    """
    from ree._state import capture_state

    gen = StrictGenerator(seed)
    with StrictMode(gen):
        reinit(work.model, gen)
        batches = [work.batch(gen) for _ in range(steps)]
    mode = StrictMode(gen) if strict else None
    if not strict:
        # default ops draw dropout masks from torch's generator: seed it, so that
        # only the ops differ between settings, not the luck of the draw
        torch.manual_seed(seed)
    work.model.train()
    for x, y in batches:
        with _maybe(mode):
            work.optimizer.zero_grad()
            work.loss(work.model, x, y).backward()
            work.optimizer.step()
    tree = capture_state(
        work.model.cpu(), work.optimizer, step=steps, mode="strict", ree_rng=gen.state()
    )
    return tree.root


def train_root(
    name: str,
    device: torch.device | str = "cpu",
    *,
    steps: int = STEPS,
    strict: bool = True,
    seed: int = 0,
) -> str:
    """Build reference workload ``name`` on ``device`` and return its root after ``steps`` steps."""
    return train_workload(build(name, device), steps=steps, strict=strict, seed=seed)


def reference_roots(
    device: torch.device | str = "cpu", *, strict: bool = True, models: tuple[str, ...] = MODELS
) -> dict[str, str]:
    """The roots of every reference workload on ``device`` (strict, or default ops)."""
    return {m: train_root(m, device, strict=strict) for m in models}
