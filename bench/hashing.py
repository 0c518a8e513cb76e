"""State-root throughput against raw SHA-256 over the same bytes, and the per-step cost.

Prints, for models of about 10M and 100M parameters trained with Adam (state =
parameters + two moments):

* raw SHA-256 over exactly the tensor bytes the root covers (one thread, the floor
  that [A] compares against: target root time <= 1.2x raw);
* ``ree.capture_state(...).root`` (header encoding, Merkle tree, and leaf hashing
  spread over threads, since hashlib releases the GIL);
* one training step, so the root's cost per step is seen against the work it proves.

Run: ``.venv/bin/python bench/hashing.py`` (``--quick`` for the 10M model only).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ree  # noqa: E402
from ree._encoding import tensor_bytes  # noqa: E402


def mlp(params_m: int) -> torch.nn.Module:
    width = 2048 if params_m <= 20 else 4096
    layers = max(1, round(params_m * 1e6 / (width * width + width)))
    mods: list[torch.nn.Module] = []
    for _ in range(layers):
        mods += [torch.nn.Linear(width, width), torch.nn.GELU()]
    return torch.nn.Sequential(*mods)


def best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(params_m: int, repeat: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = mlp(params_m)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    width = model[0].in_features
    x = torch.randn(16, width)

    def step() -> None:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    step()
    tree = ree.capture_state(model, opt, step=1)
    tensors = [v for v in tree.leaves.values() if isinstance(v, torch.Tensor)]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)

    def raw() -> None:
        for t in tensors:
            hashlib.sha256(tensor_bytes(t)).digest()

    def root() -> None:
        _ = ree.capture_state(model, opt, step=1).root

    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "mb": nbytes / 1e6,
        "raw": best(raw, repeat),
        "root": best(root, repeat),
        "step": best(step, max(1, repeat - 1)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the ~10M-parameter model")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':>8} {'state MB':>9} {'raw sha256':>11} {'root':>8} {'root/raw':>9} "
          f"{'MB/s root':>10} {'train step':>11} {'root/step':>10}")
    for m in ([10] if a.quick else [10, 100]):
        r = bench(m, a.repeat)
        print(f"{r['params_m']:>7.1f}M {r['mb']:>9.1f} {r['raw']:>10.3f}s {r['root']:>7.3f}s "
              f"{r['root'] / r['raw']:>8.2f}x {r['mb'] / r['root']:>10.0f} {r['step']:>10.3f}s "
              f"{r['root'] / r['step']:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
