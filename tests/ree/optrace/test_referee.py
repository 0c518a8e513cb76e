"""The referee against seeded adversaries (DESIGN.md, "Data flow" 5.3): every fault is caught.

Each trial traces step 2 of a tiny MLP (dropout, Adam, two micro-batches) as a
faulty party, and referees it against the honest party, with the roles
(defender or challenger) alternating by seed. The referee must side with the
honest party every time, and for a 1-ulp fault execute exactly one op: the
injected one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ree.optrace import (
    CHALLENGER,
    DEFENDER,
    Finding,
    OpRecord,
    OpTrace,
    Verdict,
    find_divergence,
    load_op_inputs,
    referee,
    save_op_inputs,
)
from tests.ree.optrace.adversaries import Attack, Fault, attacks, consumers, honest
from tests.ree.optrace.steps import trace_step

ULP = attacks(Fault.ULP, range(20), per_seed=5)  # 100 trials
INCONSISTENT = attacks(Fault.INCONSISTENT, range(20), per_seed=3)  # 60 trials
BATCH = [a for f in (Fault.REORDER_OWN_ROOT, Fault.REORDER_FORGED, Fault.SKIP_MICRO,
                     Fault.SWAP_MICRO) for a in attacks(f, range(12))]  # 48 trials


def _fetcher(seed: int, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The honest party's answer to "send the inputs of op i": re-trace, keep, save, load."""
    def fetch(record: OpRecord) -> list:  # type: ignore[type-arg]
        tracer = trace_step(seed, keep=(record.index,))
        path = save_op_inputs(tmp_path / f"op{record.index}.safetensors",
                              tracer.trace.records[record.index], tracer.kept[record.index])
        return load_op_inputs(path, record)
    return fetch


def _judge(attack: Attack, cheat: OpTrace, tmp_path: Path) -> tuple[Verdict, str]:
    good = honest(attack.seed).trace
    honest_role = DEFENDER if attack.seed % 2 == 0 else CHALLENGER
    defender, challenger = (good, cheat) if honest_role == DEFENDER else (cheat, good)
    verdict = referee(defender, challenger, state_root=good.state_root,
                      batch_root=good.batch_root, batch_n=good.batch_n,
                      fetch_inputs=_fetcher(attack.seed, tmp_path))
    return verdict, honest_role


@pytest.mark.parametrize("attack", ULP, ids=lambda a: f"s{a.seed}-op{a.target}")
def test_one_ulp_is_found_and_only_that_op_runs(attack: Attack, tmp_path: Path) -> None:
    verdict, honest_role = _judge(attack, attack.cheat(), tmp_path)
    assert verdict.winner == honest_role, verdict
    assert verdict.finding is Finding.OUTPUT
    assert verdict.op_index == attack.target
    assert verdict.ops_executed == 1
    assert verdict.expected_out_hashes == honest(attack.seed).trace.records[attack.target].out_hashes


@pytest.mark.parametrize("attack", INCONSISTENT, ids=lambda a: f"s{a.seed}-op{a.target}")
def test_inconsistent_trace_fails_its_link(attack: Attack, tmp_path: Path) -> None:
    cheat = attack.cheat()
    assert cheat.records[attack.target] == honest(attack.seed).trace.records[attack.target]
    verdict, honest_role = _judge(attack, cheat, tmp_path)
    assert verdict.winner == honest_role, verdict
    assert verdict.finding is Finding.LINK
    assert verdict.op_index == consumers(honest(attack.seed).trace, attack.target)[0]
    assert verdict.ops_executed == 0


def _first_batch_read(trace: OpTrace, leaf: str | None = None) -> int:
    return next(r.index for r in trace.records for x in r.inputs
                if x.link.kind == "batch" and (leaf is None or x.link.name == leaf))


@pytest.mark.parametrize("attack", BATCH, ids=lambda a: f"{a.fault.name}-s{a.seed}")
def test_batch_faults_are_caught(attack: Attack, tmp_path: Path) -> None:
    cheat = attack.cheat()
    good = honest(attack.seed).trace
    verdict, honest_role = _judge(attack, cheat, tmp_path)
    assert verdict.winner == honest_role, verdict
    assert verdict.ops_executed == 0
    if attack.fault is Fault.REORDER_OWN_ROOT:
        assert verdict.finding is Finding.HEADER
        return
    div = find_divergence(good.records, cheat.records)
    assert div is not None
    assert not div.inputs_agree
    if attack.fault is Fault.REORDER_FORGED:
        assert verdict.finding is Finding.LINK
        assert verdict.op_index == div.index == _first_batch_read(good)
    elif attack.fault is Fault.SKIP_MICRO:
        skipped = 1 - attack.seed % 2
        assert verdict.finding is Finding.COVERAGE
        # the traces part where the skipped micro-batch's forward starts (its weight
        # transpose precedes the op that reads its rows)
        assert verdict.op_index == div.index
        assert div.index <= _first_batch_read(good, f"mb{skipped}/x")
        assert div.index > (_first_batch_read(good, "mb0/y") if skipped else -1)
    else:
        assert verdict.finding is Finding.COVERAGE
        assert verdict.op_index == div.index == _first_batch_read(good)


@pytest.mark.parametrize("seed", range(4))
def test_an_honest_party_never_loses_to_itself(seed: int, tmp_path: Path) -> None:
    again = trace_step(seed).trace
    verdict, _ = _judge(Attack(Fault.ULP, seed), again, tmp_path)
    assert verdict.finding is Finding.AGREE
    assert verdict.winner == DEFENDER
    assert verdict.ops_executed == 0


def test_a_micro_batch_may_read_its_labels_before_its_inputs() -> None:
    """Only micro-batches must start in order: inside one, an honest loss may touch its labels
    before the model reads its inputs (leaf ``mb0/y`` before ``mb0/x``), and its trace holds."""
    import torch

    import ree
    from ree.optrace import OpTracer, check_links
    from tests.ree.optrace.steps import MICRO, make_job

    job = make_job(0)
    tracer = OpTracer(ree.capture_state(job.model, job.opt, step=1), job.batch, step=2)
    with tracer:
        job.opt.zero_grad()
        for m in range(MICRO):
            target = job.batch[f"mb{m}/y"] * 1.0  # the labels first
            loss = torch.nn.functional.mse_loss(job.model(job.batch[f"mb{m}/x"]), target) / MICRO
            loss.backward()
        job.opt.step()
    first_reads = [i.link.name for r in tracer.trace.records for i in r.inputs if i.link.kind == "batch"]
    assert first_reads[:2] == ["mb0/y", "mb0/x"]
    assert check_links(tracer.trace) is None
