"""Whole training runs: identical roots across threads, processes and vector ISAs (issue 9).

Each workload trains 20 steps. Strict roots must equal the committed golden
roots in every setting; the negative control shows that default ops do not
give one root across the same settings.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ree.strict import REFERENCE_MODELS, train_root, train_workload
from tests.ree.strict._hf import hf_gpt2_workload

ALL = (*REFERENCE_MODELS, "hf-gpt2")


def _root(name: str, strict: bool = True) -> str:
    if name == "hf-gpt2":
        return train_workload(hf_gpt2_workload(), strict=strict)
    return train_root(name, strict=strict)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ALL)
def test_strict_root_matches_golden(name: str, golden: dict[str, str]) -> None:
    assert _root(name) == golden[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_strict_roots_agree_across_processes_threads_and_isas(
    name: str, golden: dict[str, str], child_reports: dict[Any, dict[str, Any]]
) -> None:
    for setting, report in child_reports.items():
        assert report["strict"][name] == golden[name], (setting, report["capability"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_negative_control_default_ops_disagree(
    name: str, child_reports: dict[Any, dict[str, Any]]
) -> None:
    """Default ops give more than one root over the same settings (so the test above can fail)."""
    roots = {setting: report["default"][name] for setting, report in child_reports.items()}
    assert len(set(roots.values())) > 1, roots


@pytest.mark.slow
def test_children_ran_the_isas_they_were_asked_for(
    child_reports: dict[Any, dict[str, Any]],
) -> None:
    caps = {report["capability"] for report in child_reports.values()}
    assert "DEFAULT" in caps
    assert len(caps) >= 2, caps  # at least one vector ISA besides the scalar one


def test_strict_differs_from_default_but_not_by_much() -> None:
    """Strict and default training end near each other: strict changes rounding, not the math."""
    from ree.strict import build, reinit
    from ree.strict._mode import StrictMode
    from ree.strict._rng import StrictGenerator

    finals = []
    for strict in (True, False):
        work = build("mlp", "cpu")
        gen = StrictGenerator(0)
        with StrictMode(gen):
            reinit(work.model, gen)
            batches = [work.batch(gen) for _ in range(5)]
        for x, y in batches:
            if strict:
                with StrictMode(gen):
                    work.optimizer.zero_grad()
                    work.loss(work.model, x, y).backward()
                    work.optimizer.step()
            else:
                work.optimizer.zero_grad()
                work.loss(work.model, x, y).backward()
                work.optimizer.step()
        finals.append(torch.cat([p.detach().flatten() for p in work.model.parameters()]))
    rel = ((finals[0] - finals[1]).norm() / finals[1].norm()).item()
    assert 0 < rel < 1e-4, rel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_strict_root_on_gpu_matches_golden(name: str, golden: dict[str, str]) -> None:
    assert train_root(name, "cuda") == golden[name]


OPTIMIZERS = {
    "sgd": lambda ps, **kw: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, **kw),
    "sgd-nesterov": lambda ps, **kw: torch.optim.SGD(
        ps, lr=0.05, momentum=0.9, nesterov=True, **kw
    ),
    "adam": lambda ps, **kw: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.01, **kw),
    "adamw": lambda ps, **kw: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01, **kw),
}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_for_loop_foreach_and_fused_optimizers_agree_bitwise(opt: str) -> None:
    """Strict mode decomposes foreach and fused kernels into the for-loop algorithm's ops."""
    from ree.strict import build
    from ree.strict._zoo import Workload

    results = {}
    for form in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        base = build("mlp", "cpu")
        optim = OPTIMIZERS[opt](base.model.parameters(), **form)
        train_workload(Workload(base.model, optim, base.batch, base.loss), steps=3)
        # the weights and the optimizer state, not the hyperparameters (foreach/fused differ)
        tensors = [p.detach() for p in base.model.parameters()]
        tensors += [v for st in optim.state.values() for v in st.values() if torch.is_tensor(v)]
        results[str(form)] = tensors
    first, *others = results.values()
    for other in others:
        assert all(torch.equal(a, b) for a, b in zip(first, other, strict=True)), list(results)
