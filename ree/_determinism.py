"""Device-mode determinism: the settings the REE applies, and their exact restoration.

DESIGN.md, "The REE: two modes". In device mode the same hardware class and
software stack give bitwise identical runs. :func:`apply_determinism` sets every
process-wide switch that makes a run depend on more than its inputs:

* seeds: torch (CPU and every accelerator), Python ``random``, NumPy's global RNG;
* ``torch.use_deterministic_algorithms(True)`` (raising, never ``warn_only``);
* ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (the value Lightning uses);
* TF32 and reduced-precision fp32 off everywhere: ``cuda.matmul.allow_tf32``,
  ``cudnn.allow_tf32``, ``set_float32_matmul_precision("highest")`` and, on torch
  with the per-backend ``fp32_precision`` API, ``"ieee"`` for every backend and
  operator, which also covers oneDNN (CPU) convolutions;
* ``cudnn.deterministic=True`` and ``cudnn.benchmark=False``;
* a fixed intra-op thread count (NOTES.md: default ops differ between 1 and 2
  threads).

It returns a :class:`DeterminismSnapshot` of every previous value, and
:func:`restore_determinism` puts each one back: an environment variable that was
unset is unset again. Frameworks reset some of these switches themselves
(Lightning's ``Trainer.__init__``, HF's ``Trainer.train``), so integrations apply
them when training starts, not at construction.

Two process-wide facts this module cannot undo, and callers should know:

* torch reads ``CUBLAS_WORKSPACE_CONFIG`` once per process, at the first cuBLAS
  call made while deterministic algorithms are checked. Apply the REE before the
  first CUDA matmul of the process.
* ``torch.set_num_threads`` cannot lower the thread count of pools that already
  ran in other threads; the REE only sets the calling thread's intra-op count.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ree._errors import ReeConfigError

MODES = ("device", "strict")
CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE_VALUE = ":4096:8"

_UINT64 = 1 << 64
_UINT32 = 1 << 32

# torch >= 2.9 keeps fp32 precision per (backend, operator), next to the legacy
# switches. Parents come first: setting a parent overwrites its children.
_FP32_KEYS: tuple[tuple[str, str], ...] = (
    ("generic", "all"),
    ("cuda", "all"),
    ("mkldnn", "all"),
    ("cuda", "matmul"),
    ("cuda", "conv"),
    ("cuda", "rnn"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
)
# The public ``torch.backends.mkldnn.fp32_precision`` setter writes the generic
# key (a torch bug), so the exact per-key accessors are taken from torch._C.
_get_fp32 = getattr(torch._C, "_get_fp32_precision_getter", None)
_set_fp32 = getattr(torch._C, "_set_fp32_precision_setter", None)
HAS_FP32_PRECISION_API = _get_fp32 is not None and _set_fp32 is not None


@dataclass(frozen=True)
class PrecisionState:
    """The fp32 precision switches of torch, as the legacy and the new API see them.

    ``matmul`` is the value behind ``torch.get_float32_matmul_precision()`` and
    ``cudnn_allow_tf32`` the one behind ``torch.backends.cudnn.allow_tf32``. When
    torch refuses to read one of them (it raises after a mix of the legacy and the
    per-backend APIs), the value stored is one that makes torch refuse again, so a
    restored process answers every query the way the original did. ``fp32`` holds
    the per-(backend, operator) values on torch that has them, else is empty.

    torch reports resolved values: a key left unset inherits from its backend's
    ``all`` key and then from ``generic``. Restoration writes a key only where the
    resolved value differs, so inherited keys stay inherited. One marker cannot be
    written from Python: cuDNN conv and rnn start as "default" (tf32 unless a
    parent says otherwise); after a change they come back as an explicit value.
    """

    matmul: str
    cudnn_allow_tf32: bool
    fp32: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class RngState:
    """The global generators' states: torch CPU, CUDA and MPS devices, ``random``, NumPy.

    ``torch.manual_seed`` also reseeds other accelerators (XPU...); their states
    are not captured here.
    """

    torch_cpu: torch.Tensor
    cuda: tuple[torch.Tensor, ...] | None
    mps: torch.Tensor | None
    python: tuple[Any, ...]
    numpy: tuple[Any, ...] | dict[str, Any]


@dataclass(frozen=True)
class DeterminismSnapshot:
    """Every process-wide value :func:`apply_determinism` changes, as it was before.

    Pass it to :func:`restore_determinism`. ``cublas_workspace_config`` is
    ``None`` when the variable was not set.
    """

    deterministic_algorithms: bool
    deterministic_warn_only: bool
    cublas_workspace_config: str | None
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    precision: PrecisionState
    num_threads: int
    rng: RngState


# -- validation ---------------------------------------------------------------


def check_mode(mode: object) -> str:
    """Return ``mode`` if it names an REE mode (``"device"`` or ``"strict"``), else raise."""
    if mode not in MODES:
        raise ReeConfigError(f"unknown REE mode {mode!r}; use one of {MODES!r}")
    return mode


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is an int in [0, 2**64), the range every generator accepts."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ReeConfigError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    if not 0 <= seed < _UINT64:
        raise ReeConfigError(f"seed must be in [0, 2**64), got {seed!r}")
    return seed


def _check_threads(threads: object) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ReeConfigError(
            f"threads must be a positive int, or None to keep torch's count; got {threads!r}"
        )
    return threads


# -- seeds --------------------------------------------------------------------


def numpy_seed(seed: int) -> int | list[int]:
    """The argument that seeds NumPy's legacy global RNG from a 64-bit ``seed``.

    NumPy takes 32-bit words; a seed below 2**32 is passed as is (so
    ``seed_everything(42)`` matches ``np.random.seed(42)``), a larger one as its
    low and high words, so that the high bits count.
    """
    if seed < _UINT32:
        return seed
    return [seed & (_UINT32 - 1), seed >> 32]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every accelerator), Python ``random`` and NumPy's global RNG."""
    check_seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA/MPS/XPU device, lazily
    random.seed(seed)
    np.random.seed(numpy_seed(seed))


def _capture_rng() -> RngState:
    cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None
    mps = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    return RngState(
        torch_cpu=torch.get_rng_state(),
        cuda=cuda,
        mps=mps,
        python=random.getstate(),
        numpy=np.random.get_state(),
    )


def _restore_rng(state: RngState) -> None:
    torch.set_rng_state(state.torch_cpu)
    if state.cuda is not None:
        torch.cuda.set_rng_state_all(list(state.cuda))
    if state.mps is not None:
        torch.mps.set_rng_state(state.mps)
    random.setstate(state.python)
    np.random.set_state(state.numpy)


# -- fp32 precision -----------------------------------------------------------


def _try_read(read: Any) -> Any:
    try:
        return read()
    except RuntimeError:  # torch refuses legacy reads after a mix of the two APIs
        return None


def _fp32(backend: str, op: str) -> str:
    assert _get_fp32 is not None
    return str(_get_fp32(backend, op))


def _capture_precision() -> PrecisionState:
    matmul = _try_read(torch.get_float32_matmul_precision)
    cudnn = _try_read(lambda: torch.backends.cudnn.allow_tf32)
    if not HAS_FP32_PRECISION_API:
        return PrecisionState(matmul=str(matmul), cudnn_allow_tf32=bool(cudnn))
    fp32 = tuple((b, o, _fp32(b, o)) for b, o in _FP32_KEYS)
    if matmul is None:
        matmul = _unreadable_matmul_precision()
    if cudnn is None:
        # torch refuses when conv, rnn and the legacy flag disagree. If conv and rnn
        # agree, the flag must be the opposite; if not, any value keeps the refusal.
        cudnn = _fp32("cuda", "conv") != "tf32"
    return PrecisionState(matmul=str(matmul), cudnn_allow_tf32=bool(cudnn), fp32=fp32)


def _unreadable_matmul_precision() -> str:
    """The legacy matmul precision torch hides when it refuses to read it.

    torch refuses when a per-backend matmul precision contradicts the legacy
    value: cuda tf32 with ``"highest"``, oneDNN bf16 without ``"medium"``, oneDNN
    tf32 without ``"high"``. ``cuda.matmul.allow_tf32`` compares the legacy value
    with ``"highest"`` against cuda's tf32, and refuses when they differ.
    """
    cuda_tf32 = _fp32("cuda", "matmul") == "tf32"
    cublas_tf32 = _try_read(lambda: torch.backends.cuda.matmul.allow_tf32)
    not_highest = cuda_tf32 if cublas_tf32 is not None else not cuda_tf32
    if not not_highest:
        return "highest"
    return "high" if _fp32("mkldnn", "matmul") == "bf16" else "medium"


def _restore_precision(state: PrecisionState) -> None:
    # The legacy setters also write per-backend values, so they go first. Then a
    # per-backend value is written only where torch now reports another one,
    # parents before children: a value that was inherited from its parent stays
    # inherited, so a later change of the parent reaches it as it did before.
    torch.backends.cudnn.allow_tf32 = state.cudnn_allow_tf32
    torch.set_float32_matmul_precision(state.matmul)
    for backend, op, value in state.fp32:
        if _fp32(backend, op) != value:
            assert _set_fp32 is not None
            _set_fp32(backend, op, value)


def _pin_ieee_precision() -> None:
    if HAS_FP32_PRECISION_API:
        assert _set_fp32 is not None
        # Every backend and operator inherits "ieee" from the generic key, which
        # also clears per-operator values a framework may have set.
        for backend, op in _FP32_KEYS[1:]:
            _set_fp32(backend, op, "none")
        _set_fp32("generic", "all", "ieee")
    # The legacy switches after it, so legacy reads (Lightning's tensor-core hint
    # reads get_float32_matmul_precision) see a consistent state.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


# -- apply / restore ----------------------------------------------------------


def snapshot_determinism() -> DeterminismSnapshot:
    """Capture every value :func:`apply_determinism` would change, without changing it."""
    return DeterminismSnapshot(
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cublas_workspace_config=os.environ.get(CUBLAS_WORKSPACE_ENV),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        precision=_capture_precision(),
        num_threads=torch.get_num_threads(),
        rng=_capture_rng(),
    )


def apply_determinism(
    mode: str = "device", seed: int = 0, *, threads: int | None = 1
) -> DeterminismSnapshot:
    """Apply the REE's device-mode settings and seeds; return what they replaced.

    ``threads`` fixes torch's intra-op thread count (``None`` keeps the current
    count, which is then part of :func:`ree.fingerprint`). Everything is checked
    before anything changes, and a failure half-way restores what was changed.
    Undo with :func:`restore_determinism`, or use :func:`deterministic`.
    """
    check_mode(mode)
    check_seed(seed)
    threads = _check_threads(threads)
    snapshot = snapshot_determinism()
    try:
        os.environ[CUBLAS_WORKSPACE_ENV] = CUBLAS_WORKSPACE_VALUE
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        _pin_ieee_precision()
        if threads is not None:
            torch.set_num_threads(threads)
        seed_everything(seed)
    except BaseException:
        restore_determinism(snapshot)
        raise
    return snapshot


def restore_determinism(snapshot: DeterminismSnapshot) -> None:
    """Put back every value in ``snapshot``, taken by :func:`apply_determinism`."""
    if snapshot.cublas_workspace_config is None:
        os.environ.pop(CUBLAS_WORKSPACE_ENV, None)
    else:
        os.environ[CUBLAS_WORKSPACE_ENV] = snapshot.cublas_workspace_config
    torch.use_deterministic_algorithms(
        snapshot.deterministic_algorithms, warn_only=snapshot.deterministic_warn_only
    )
    torch.backends.cudnn.deterministic = snapshot.cudnn_deterministic
    torch.backends.cudnn.benchmark = snapshot.cudnn_benchmark
    _restore_precision(snapshot.precision)
    torch.set_num_threads(snapshot.num_threads)
    _restore_rng(snapshot.rng)


@contextlib.contextmanager
def deterministic(
    mode: str = "device", seed: int = 0, *, threads: int | None = 1
) -> Iterator[DeterminismSnapshot]:
    """Run a block under the REE's settings, and restore every one on exit.

    Restoration happens on an exception too. The block receives the snapshot of
    the previous values. See :func:`apply_determinism` for what is set.
    """
    snapshot = apply_determinism(mode, seed, threads=threads)
    try:
        if mode == "strict":
            from ree.strict import enter_strict  # lazy: strict's op tables load only when used

            with enter_strict(seed):
                yield snapshot
        else:
            yield snapshot
    finally:
        restore_determinism(snapshot)
