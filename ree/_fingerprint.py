"""The fingerprint of an execution environment: what solvers and verifiers must share.

DESIGN.md, "The REE: two modes". In device mode, bitwise equality is promised
only between machines of the same hardware class and software stack, so
solvers, verifiers and the referee must match the task's fingerprint exactly.
The fingerprint therefore holds everything that changes which kernels run or
how they round, and nothing that changes between two runs on one machine: no
pid, time, hostname, free memory, driver-managed clocks or microcode.

Device mode (``fingerprint("device")``) records:

* ``python``: implementation and version, and the C library (``libm`` rounds
  ``math.exp``/``math.cos``, which LR schedulers use);
* ``os``: system and machine architecture;
* ``torch``: version, git revision, CUDA/HIP/cuDNN versions, the digest of
  ``torch.__config__.show()`` (compiler, BLAS, oneDNN and their versions) and
  the parts of it that matter read out: BLAS and LAPACK provider, MKL and
  oneDNN versions, the parallel backend, the CPU kernel level torch dispatches to
  (``torch.backends.cpu.get_cpu_capability()``);
* ``numpy``: version (it carries its own BLAS);
* ``cpu``: vendor, model name, family and model numbers, and the ISA flags that
  select kernels (AVX2, AVX-512 and its extensions, AMX, FMA, F16C, SVE...);
* ``devices``: each visible accelerator: type, name, compute capability and
  multiprocessor count (a MIG slice has its parent's name but fewer SMs, and
  cuBLAS picks kernels by SM count);
* ``env``: the environment variables that override kernels or precision
  (``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``,
  ``NVIDIA_TF32_OVERRIDE``, ``CUBLAS_WORKSPACE_CONFIG``...), ``None`` when unset;
* ``threads``: torch's intra-op thread count. Take the fingerprint inside
  ``ree.deterministic()`` so it is the count the run uses.

Strict mode (``fingerprint("strict")``) is a promise of bitwise equality across
CPUs, GPUs and torch versions, so its fingerprint is only the version of the
strict operator set: ``{"mode": "strict", "ree_strict_version": N}``. Two strict
results may differ only if that version differs.

``"hash"`` is the SHA-256 (hex) of ``canonical_json`` of every other field.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from typing import Any

import numpy as np
import torch

from ree._encoding import canonical_json
from ree._errors import ReeConfigError

FINGERPRINT_VERSION = 1
# The strict operator set's contract version. The strict-mode issue raises it
# whenever any strict operator's output bits change.
REE_STRICT_VERSION = 1

# ISA extensions that change which CPU kernels torch, MKL, oneDNN or NumPy pick.
CPU_ISA_FLAGS = frozenset(
    {
        # x86
        "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c",
        "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512ifma",
        "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bf16", "avx512_fp16",
        "avx512_bitalg", "avx512_vpopcntdq",
        "avx_vnni", "avx_vnni_int8", "avx_ne_convert", "avx_ifma",
        "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "amx_complex",
        # arm64
        "asimd", "asimdhp", "asimddp", "fphp", "sve", "sve2", "bf16", "i8mm", "sme", "sme2",
    }
)  # fmt: skip

# Environment variables that override kernels, ISA or fp precision.
NUMERICS_ENV = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "DNNL_DEFAULT_FPMATH_MODE",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "TORCH_BLAS_PREFER_CUBLASLT",
    "TORCH_BLAS_PREFER_HIPBLASLT",
    "TORCH_CUDNN_V8_API_DISABLED",
)

_CPUINFO = "/proc/cpuinfo"


def fingerprint(mode: str = "device") -> dict[str, Any]:
    """Describe what changes numerics in ``mode``, with ``"hash"`` over the rest.

    The same process asked twice gives the same dict. See the module docstring
    for each field.
    """
    if mode == "device":
        fields = _device_fields()
    elif mode == "strict":
        fields = {"mode": "strict", "ree_strict_version": REE_STRICT_VERSION}
    else:
        raise ReeConfigError(f"unknown REE mode {mode!r}; use 'device' or 'strict'")
    return {**fields, "hash": fingerprint_hash(fields)}


def fingerprint_hash(fields: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``fields`` (without any ``"hash"`` key)."""
    rest = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical_json(rest)).hexdigest()


def _device_fields() -> dict[str, Any]:
    return {
        "mode": "device",
        "fingerprint_version": FINGERPRINT_VERSION,
        "python": _python(),
        "os": {"system": platform.system(), "machine": platform.machine()},
        "torch": _torch(),
        "numpy": np.__version__,
        "cpu": _cpu(),
        "devices": _devices(),
        "env": {name: os.environ.get(name) for name in NUMERICS_ENV},
        "threads": torch.get_num_threads(),
    }


def _python() -> dict[str, Any]:
    libc, libc_version = platform.libc_ver()
    return {
        "implementation": platform.python_implementation(),
        "version": platform.python_version(),
        "libc": f"{libc} {libc_version}".strip() or None,
    }


def _torch() -> dict[str, Any]:
    config = torch.__config__.show()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return {
        "version": torch.__version__,
        "git": torch.version.git_version,
        "debug": bool(torch.version.debug),
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "cudnn": cudnn,
        "cpu_capability": get_capability() if get_capability is not None else None,
        "config_sha256": hashlib.sha256(config.encode("utf-8")).hexdigest(),
        **_blas(config),
    }


def _blas(config: str) -> dict[str, Any]:
    """The BLAS, LAPACK, MKL, oneDNN and threading parts of torch's build config."""
    settings = dict(re.findall(r"\b([A-Z_]+)=([^,\s]*)", config))

    def line(marker: str) -> str | None:
        found = next((ln for ln in config.splitlines() if marker in ln), None)
        return found.strip().removeprefix("- ").strip() if found else None

    parallel = re.search(r"ATen parallel backend: (.+)", torch.__config__.parallel_info())
    return {
        "blas": settings.get("BLAS_INFO"),
        "lapack": settings.get("LAPACK_INFO"),
        "mkl": line("Math Kernel Library"),
        "onednn": line("MKL-DNN"),
        "openmp": line("OpenMP"),
        "parallel_backend": parallel.group(1).strip() if parallel else None,
    }


def _cpu() -> dict[str, Any]:
    info = _read_cpuinfo()
    flags = sorted(set((info.get("flags") or info.get("Features") or "").split()) & CPU_ISA_FLAGS)
    return {
        "vendor": info.get("vendor_id") or info.get("CPU implementer"),
        "model_name": info.get("model name") or platform.processor() or None,
        "family": info.get("cpu family") or info.get("CPU architecture"),
        "model": info.get("model") or info.get("CPU part"),
        "isa_flags": flags,
    }


def _read_cpuinfo() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo; empty where there is none."""
    try:
        with open(_CPUINFO, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:  # not Linux: platform.processor() is the fallback
        return {}
    fields: dict[str, str] = {}
    for raw in text.splitlines():
        if not raw.strip():
            if fields:
                break  # only the first processor: the others repeat it
            continue
        key, sep, value = raw.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _devices() -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(
                {
                    "type": "cuda",
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "multiprocessors": props.multi_processor_count,
                    "arch": getattr(props, "gcnArchName", None) if torch.version.hip else None,
                }
            )
    if torch.backends.mps.is_available():
        devices.append({"type": "mps", "name": platform.machine()})
    return devices
