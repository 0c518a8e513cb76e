"""Check that this machine's device reproduces the golden strict-mode roots.

Self-contained: it needs only torch and the ``ree`` package. It trains each
reference workload (and a tiny Hugging Face GPT-2 when ``transformers`` is
installed) for 20 steps under strict mode on the device, and compares each state
root with the golden root committed from a CPU run
(``tests/ree/strict/golden_roots.json``; a test keeps the copy below in sync).
It also trains them with default ops, to show that those do not reproduce.

    python bench/strict_gpu_check.py                 # cuda if available
    python bench/strict_gpu_check.py --device cpu --models mlp

Exit status 0 when every strict root matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ree.strict import REFERENCE_MODELS, StrictGenerator, Workload, train_root, train_workload

# Keep equal to tests/ree/strict/golden_roots.json (checked by tests/ree/strict/test_bench.py).
GOLDEN = {
    "bncnn": "3a6abeb2baef49b3e692cfcc96b25188840ccc03d87b5f0d5c7a690435292b33",
    "cnn": "63a0bada19e2603e03d30f87744ca0a6ca883cb67890bf0d1ad43c2e2f3bfe3c",
    "gpt": "825e80abb60098edb4b369c5338dfd04c37ca947757b092a570edf5754c10e5f",
    "hf-gpt2": "25d214e9b6f920d6c5089cbfcfc187034f419ed997a25e29e89cede3c71698b0",
    "mha": "677c0ebb07ae042360bcce6b0f33c91ff4f4d43fcc3a9be07d7589792de3562f",
    "mlp": "5bd99046814c62665ac9810e0f97e785edc8a3195a0ac1ba69b433e21955466f",
}


def hf_gpt2_workload(device: str) -> Workload:
    """The tiny HF GPT-2 of the tests (tests/ree/strict/_hf.py), built the same way."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    cfg = GPT2Config(
        vocab_size=64,
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
        ids = (g.bits(4 * 8, device) % 64).reshape(4, 8)
        return ids, ids

    return Workload(model, opt, tokens, lambda m, x, y: m(input_ids=x, labels=y).loss)


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def root(name: str, device: str, strict: bool) -> str:
    """The root of workload ``name`` after 20 steps on ``device``."""
    if name == "hf-gpt2":
        return train_workload(hf_gpt2_workload(device), strict=strict)
    return train_root(name, device, strict=strict)


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=None, help="comma-separated (default: all available)")
    parser.add_argument("--no-control", action="store_true", help="skip the default-ops runs")
    args = parser.parse_args(argv)
    names = (
        args.models.split(",")
        if args.models
        else [*REFERENCE_MODELS, *(["hf-gpt2"] if _has_transformers() else [])]
    )
    dev = args.device
    where = (
        torch.cuda.get_device_name(dev)
        if dev.startswith("cuda")
        else f"CPU ({torch.backends.cpu.get_cpu_capability()})"
    )
    print(f"device: {where}; torch {torch.__version__}")
    print(f"{'model':<9} {'strict root':<18} {'golden':<7} {'default-ops root':<18} {'s':>6}")
    ok = True
    for name in names:
        t0 = time.perf_counter()
        strict = root(name, dev, strict=True)
        match = strict == GOLDEN[name]
        ok &= match
        default = "-" if args.no_control else root(name, dev, strict=False)[:16]
        secs = time.perf_counter() - t0
        print(
            f"{name:<9} {strict[:16]:<18} {'MATCH' if match else 'DIFFER':<7} {default:<18} {secs:>6.1f}"
        )
    print(
        "all strict roots match the golden roots"
        if ok
        else "MISMATCH: this device does not reproduce strict mode"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
