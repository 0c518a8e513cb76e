"""Child process for the cross-process tests: print the roots of every workload as JSON.

Run as ``python -m tests.ree.strict._child THREADS``; the parent sets
``ATEN_CPU_CAPABILITY`` in the environment, which torch reads at import.
"""

from __future__ import annotations

import json
import sys

import torch

from ree.strict import REFERENCE_MODELS, train_root, train_workload
from tests.ree.strict._hf import hf_gpt2_workload


def roots(strict: bool) -> dict[str, str]:
    """Roots of the reference workloads and of HF GPT-2, strict or with default ops."""
    out = {m: train_root(m, strict=strict) for m in REFERENCE_MODELS}
    out["hf-gpt2"] = train_workload(hf_gpt2_workload(), strict=strict)
    return out


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]))
    report = {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "strict": roots(strict=True),
        "default": roots(strict=False),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
