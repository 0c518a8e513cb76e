"""Device-mode determinism (ree._determinism) and the environment fingerprint (ree._fingerprint).

Each switch that ``deterministic()`` sets is a case of its own: set to a value
other than the one the REE applies, checked inside the block, and checked again
after a normal exit and after an exception.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ree._determinism import (
    _FP32_KEYS,
    CUBLAS_WORKSPACE_ENV,
    HAS_FP32_PRECISION_API,
    apply_determinism,
    deterministic,
    restore_determinism,
    seed_everything,
    snapshot_determinism,
)
from ree._encoding import canonical_json
from ree._errors import GensynError, NondeterminismError, ReeConfigError
from ree._fingerprint import REE_STRICT_VERSION, fingerprint, fingerprint_hash

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    """Put every switch back after each test, whatever the test did to it."""
    saved_env = os.environ.get(CUBLAS_WORKSPACE_ENV)
    snapshot = snapshot_determinism()
    yield
    restore_determinism(snapshot)
    if saved_env is None:
        os.environ.pop(CUBLAS_WORKSPACE_ENV, None)
    else:
        os.environ[CUBLAS_WORKSPACE_ENV] = saved_env


class _Boom(Exception):
    """Raised inside a block to check restoration on the way out."""


# -- one case per switch -------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """A switch: how to set a prior value, how to read it, and what the REE applies."""

    name: str
    set_prior: Callable[[], None]
    read: Callable[[], Any]
    applied: Any


def _set_env(value: str | None) -> Callable[[], None]:
    def set_prior() -> None:
        if value is None:
            os.environ.pop(CUBLAS_WORKSPACE_ENV, None)
        else:
            os.environ[CUBLAS_WORKSPACE_ENV] = value

    return set_prior


def _set_attr(obj: Any, attr: str, value: Any) -> Callable[[], None]:
    return lambda: setattr(obj, attr, value)


def _fp32_all() -> tuple[str, ...]:
    get = torch._C._get_fp32_precision_getter
    return tuple(get(backend, op) for backend, op in _FP32_KEYS)


def _set_fp32(backend: str, op: str, value: str) -> Callable[[], None]:
    return lambda: torch._C._set_fp32_precision_setter(backend, op, value)


def _numpy_state() -> tuple[Any, ...]:
    name, keys, pos, has_gauss, gauss = cast(Any, np.random.get_state())
    return (name, keys.tobytes(), pos, has_gauss, gauss)


def _seeded_numpy_state(seed: int) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, gauss = cast(Any, np.random.RandomState(seed).get_state())
    return (name, keys.tobytes(), pos, has_gauss, gauss)


FLAGS = [
    Flag(
        "deterministic_algorithms_warn_only",
        lambda: torch.use_deterministic_algorithms(True, warn_only=True),
        lambda: (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        (True, False),
    ),
    Flag(
        "deterministic_algorithms_off",
        lambda: torch.use_deterministic_algorithms(False),
        torch.are_deterministic_algorithms_enabled,
        True,
    ),
    Flag(
        "cublas_workspace_unset",
        _set_env(None),
        lambda: os.environ.get(CUBLAS_WORKSPACE_ENV),
        ":4096:8",
    ),
    Flag(
        "cublas_workspace_other",
        _set_env(":16:8"),
        lambda: os.environ.get(CUBLAS_WORKSPACE_ENV),
        ":4096:8",
    ),
    Flag(
        "cuda_matmul_allow_tf32",
        _set_attr(torch.backends.cuda.matmul, "allow_tf32", True),
        lambda: torch.backends.cuda.matmul.allow_tf32,
        False,
    ),
    Flag(
        "cudnn_allow_tf32",
        _set_attr(torch.backends.cudnn, "allow_tf32", True),
        lambda: torch.backends.cudnn.allow_tf32,
        False,
    ),
    Flag(
        "cudnn_deterministic",
        _set_attr(torch.backends.cudnn, "deterministic", False),
        lambda: torch.backends.cudnn.deterministic,
        True,
    ),
    Flag(
        "cudnn_benchmark",
        _set_attr(torch.backends.cudnn, "benchmark", True),
        lambda: torch.backends.cudnn.benchmark,
        False,
    ),
    Flag(
        "float32_matmul_precision",
        lambda: torch.set_float32_matmul_precision("medium"),
        torch.get_float32_matmul_precision,
        "highest",
    ),
    Flag(
        "num_threads",
        lambda: torch.set_num_threads(3),
        torch.get_num_threads,
        1,
    ),
    Flag(
        "rng_torch_cpu",
        lambda: torch.manual_seed(1234),
        lambda: torch.get_rng_state().numpy().tobytes(),
        torch.Generator().manual_seed(0).get_state().numpy().tobytes(),
    ),
    Flag(
        "rng_python",
        lambda: random.seed(1234),
        random.getstate,
        random.Random(0).getstate(),
    ),
    Flag(
        "rng_numpy",
        lambda: np.random.seed(1234),
        _numpy_state,
        _seeded_numpy_state(0),
    ),
]
if HAS_FP32_PRECISION_API:
    FLAGS += [
        Flag(
            "fp32_precision_generic",
            _set_fp32("generic", "all", "tf32"),
            _fp32_all,
            ("ieee",) * len(_FP32_KEYS),
        ),
        Flag(
            "fp32_precision_mkldnn_conv",
            _set_fp32("mkldnn", "conv", "bf16"),
            _fp32_all,
            ("ieee",) * len(_FP32_KEYS),
        ),
    ]


def _fail_inside(flag: Flag) -> None:
    with deterministic():
        assert flag.read() == flag.applied
        raise _Boom


@pytest.mark.parametrize("exit_by", ["return", "exception"])
@pytest.mark.parametrize("flag", FLAGS, ids=[f.name for f in FLAGS])
def test_deterministic_sets_then_restores_each_flag(flag: Flag, exit_by: str) -> None:
    flag.set_prior()
    prior = flag.read()
    assert prior != flag.applied, "the prior value must differ from what the REE applies"

    if exit_by == "return":
        with deterministic():
            assert flag.read() == flag.applied
    else:
        with pytest.raises(_Boom):
            _fail_inside(flag)

    assert flag.read() == prior


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deterministic_restores_cuda_rng() -> None:
    torch.cuda.manual_seed_all(1234)
    prior = [s.clone() for s in torch.cuda.get_rng_state_all()]
    with deterministic(seed=5):
        torch.rand(3, device="cuda")
    after = torch.cuda.get_rng_state_all()
    assert all(torch.equal(a, b) for a, b in zip(prior, after, strict=True))


def test_apply_and_restore_are_symmetric_functions() -> None:
    torch.set_num_threads(2)
    snapshot = apply_determinism(seed=3, threads=1)
    assert snapshot.num_threads == 2
    assert torch.get_num_threads() == 1
    restore_determinism(snapshot)
    assert torch.get_num_threads() == 2


def test_threads_none_keeps_the_count() -> None:
    torch.set_num_threads(2)
    with deterministic(threads=None):
        assert torch.get_num_threads() == 2


def test_failure_half_way_restores_what_was_set(monkeypatch: pytest.MonkeyPatch) -> None:
    os.environ.pop(CUBLAS_WORKSPACE_ENV, None)
    torch.use_deterministic_algorithms(False)

    def refuse(n: int) -> None:
        raise RuntimeError("no threads today")

    monkeypatch.setattr(torch, "set_num_threads", refuse)
    with pytest.raises(RuntimeError, match="no threads today"):
        apply_determinism()
    monkeypatch.undo()
    assert CUBLAS_WORKSPACE_ENV not in os.environ
    assert not torch.are_deterministic_algorithms_enabled()


def test_strict_mode_enters_the_strict_dispatch_mode_and_leaves_it() -> None:
    from ree.strict import current_mode

    before = snapshot_determinism()
    assert current_mode() is None
    with deterministic("strict", seed=3):
        assert current_mode() is not None
        with pytest.raises(NondeterminismError):
            torch.linalg.eigvals(torch.eye(2))  # not on the strict op list: refused, never run
    assert current_mode() is None
    assert torch.are_deterministic_algorithms_enabled() == before.deterministic_algorithms
    assert os.environ.get(CUBLAS_WORKSPACE_ENV) == before.cublas_workspace_config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "fast"},
        {"mode": None},
        {"seed": -1},
        {"seed": 2**64},
        {"seed": True},
        {"seed": 1.5},
        {"threads": 0},
        {"threads": True},
    ],
    ids=repr,
)
def test_bad_settings_raise_config_errors_and_change_nothing(kwargs: dict[str, Any]) -> None:
    os.environ.pop(CUBLAS_WORKSPACE_ENV, None)
    with pytest.raises(ReeConfigError) as info:
        apply_determinism(**kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, GensynError)
    assert CUBLAS_WORKSPACE_ENV not in os.environ


def test_large_seeds_seed_every_generator() -> None:
    seed_everything(2**64 - 1)
    a = (torch.rand(2), random.random(), np.random.rand())
    seed_everything(2**64 - 1)
    assert (torch.rand(2), random.random(), np.random.rand())[1:] == a[1:]
    seed_everything(2**64 - 2)
    assert np.random.rand() != a[2]


# -- seeds make runs identical ------------------------------------------------


def _train_tiny(seed: int) -> dict[str, torch.Tensor]:
    """Three Adam steps of a small MLP with dropout on random data."""
    with deterministic(seed=seed):
        model = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1)
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            x = torch.randn(4, 8)
            noise = float(np.random.rand()) + random.random()
            loss = (model(x) - noise).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_seeded_runs_are_bitwise_identical_and_seeds_matter() -> None:
    first, second, other = _train_tiny(0), _train_tiny(0), _train_tiny(1)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert any(not torch.equal(first[n], other[n]) for n in first)


# -- fp32 precision: every query answers as before ----------------------------

if HAS_FP32_PRECISION_API:
    _VALUES = {"generic": ["none", "ieee", "tf32", "bf16"], "cuda": ["none", "ieee", "tf32"]}
    _PRECISION_OPS = st.one_of(
        st.sampled_from(_FP32_KEYS).flatmap(
            lambda key: st.sampled_from(_VALUES.get(key[0], _VALUES["generic"])).map(
                lambda v: ("fp32", key, v)
            )
        ),
        st.sampled_from(["highest", "high", "medium"]).map(lambda v: ("matmul", None, v)),
        st.booleans().map(lambda v: ("cublas", None, v)),
        st.booleans().map(lambda v: ("cudnn", None, v)),
    )


def _do_precision_op(op: tuple[str, Any, Any]) -> None:
    kind, key, value = op
    if kind == "fp32":
        torch._C._set_fp32_precision_setter(*key, value)
    elif kind == "matmul":
        torch.set_float32_matmul_precision(value)
    elif kind == "cublas":
        torch.backends.cuda.matmul.allow_tf32 = value
    else:
        torch.backends.cudnn.allow_tf32 = value


def _answer(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except RuntimeError:  # torch refuses legacy reads after a mix of the APIs
        return "refused"


def _precision_view() -> tuple[Any, ...]:
    return (
        _fp32_all(),
        _answer(torch.get_float32_matmul_precision),
        _answer(lambda: torch.backends.cuda.matmul.allow_tf32),
        _answer(lambda: torch.backends.cudnn.allow_tf32),
    )


@pytest.mark.skipif(not HAS_FP32_PRECISION_API, reason="torch before the fp32_precision API")
# The state space of nine keys and three legacy switches is large, and each
# example takes about a millisecond: more examples than the profile's default.
@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_PRECISION_OPS if HAS_FP32_PRECISION_API else st.nothing(), max_size=6))
# Each branch where torch refuses a legacy read and the hidden value is inferred:
@example(ops=[("matmul", None, "high"), ("fp32", ("mkldnn", "matmul"), "bf16")])
@example(ops=[("matmul", None, "medium"), ("fp32", ("mkldnn", "matmul"), "tf32")])
@example(
    ops=[
        ("matmul", None, "high"),
        ("fp32", ("cuda", "matmul"), "ieee"),
        ("fp32", ("mkldnn", "matmul"), "bf16"),
    ]
)
@example(ops=[("fp32", ("cuda", "matmul"), "tf32")])
@example(ops=[("fp32", ("cuda", "conv"), "ieee")])
@example(ops=[("fp32", ("generic", "all"), "ieee")])
def test_any_mix_of_precision_apis_is_pinned_then_restored(ops: list[Any]) -> None:
    for op in ops:
        _do_precision_op(op)
    before = _precision_view()
    with deterministic(threads=None):
        assert _precision_view() == (("ieee",) * len(_FP32_KEYS), "highest", False, False)
    assert _precision_view() == before


# -- fingerprint ----------------------------------------------------------------


def test_fingerprint_is_stable_and_hashes_the_rest() -> None:
    fp = fingerprint()
    assert fingerprint() == fp
    rest = {k: v for k, v in fp.items() if k != "hash"}
    assert fp["hash"] == hashlib.sha256(canonical_json(rest)).hexdigest()
    assert fp["hash"] == fingerprint_hash(fp)
    assert fp["mode"] == "device"
    assert fp["torch"]["version"] == torch.__version__
    assert fp["numpy"] == np.__version__
    assert fp["threads"] == torch.get_num_threads()
    assert fp["torch"]["cpu_capability"]  # torch reports its CPU kernel level


def test_fingerprint_is_the_same_in_another_process() -> None:
    """No pid, clock, hostname or memory figure: a fresh process agrees."""
    code = (
        "from ree._determinism import deterministic\n"
        "from ree._fingerprint import fingerprint\n"
        "with deterministic(threads=1):\n"
        "    print(fingerprint()['hash'])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    with deterministic(threads=1):
        assert out.stdout.strip() == fingerprint()["hash"]


def test_fingerprint_changes_with_what_changes_numerics(monkeypatch: pytest.MonkeyPatch) -> None:
    with deterministic(threads=1):
        one = fingerprint()["hash"]
    with deterministic(threads=2):
        two = fingerprint()["hash"]
    assert one != two
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    with deterministic(threads=1):
        assert fingerprint()["hash"] != one


def test_strict_fingerprint_names_only_the_strict_contract() -> None:
    with deterministic(threads=1):
        one = fingerprint("strict")
    with deterministic(threads=2):
        two = fingerprint("strict")
    assert one == two
    assert set(one) == {"mode", "ree_strict_version", "hash"}
    assert one["ree_strict_version"] == REE_STRICT_VERSION
    assert one["hash"] != fingerprint("device")["hash"]


def test_fingerprint_refuses_an_unknown_mode() -> None:
    with pytest.raises(ReeConfigError, match="'fast'"):
        fingerprint("fast")
