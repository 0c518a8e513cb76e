"""The referee of one disputed step: pure functions over two operator traces.

DESIGN.md, "Data flow" 5.3 (Verde level 3). Both parties agree on the state
root of step k-1 (levels 1 and 2 established it) and on the step's batch root
(it follows from the task's data and cursor). The referee:

1. checks each trace's header against those roots;
2. finds the first record where the traces differ (:func:`find_divergence`);
3. checks both traces' dataflow links up to that record, and that each trace
   consumes every batch leaf (:func:`check_links`): a trace whose links do not
   hold loses;
4. when the divergent op's inputs agree and its outputs differ, fetches those
   inputs, checks their hashes, re-executes that ONE op, and gives the verdict
   to the party whose output hashes match.

When both traces are well linked but disagree on an op's *inputs* (another op,
other arguments: the program itself diverged), one op cannot settle it; the
verdict says so and the dispute falls back to re-executing the step (level 2).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from ree._merkle import verify_proof
from ree.optrace._records import OpRecord, OpTrace, rng_leaf, tensor_hash
from ree.optrace._replay import const_tensor, reexecute

DEFENDER = "defender"
CHALLENGER = "challenger"


class Finding(enum.Enum):
    """Why a verdict went the way it did."""

    AGREE = "traces agree"
    HEADER = "trace header does not commit to the agreed state or batch root"
    LINK = "a dataflow link does not hold"
    COVERAGE = "a batch leaf is never read, or read out of order"
    OUTPUT = "re-executing the op gave other outputs"
    BOTH_WRONG = "re-executing the op matched neither party"
    PROGRAM = "the traces ran different ops or arguments; re-execute the step instead"


@dataclass(frozen=True)
class LinkFailure:
    """The first place a trace's dataflow does not hold."""

    op: int
    finding: Finding
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The referee's answer for one step."""

    winner: str | None  # DEFENDER, CHALLENGER, or None when one op cannot settle it
    finding: Finding
    op_index: int | None
    expected_out_hashes: tuple[str, ...] = ()
    ops_executed: int = 0
    detail: str = ""

    @property
    def loser(self) -> str | None:
        """The party that is slashed, if any."""
        if self.winner is None:
            return None
        return CHALLENGER if self.winner == DEFENDER else DEFENDER


@dataclass(frozen=True)
class Divergence:
    """The first record index where two traces differ, and whether the inputs agree there."""

    index: int
    inputs_agree: bool


def find_divergence(a: Sequence[OpRecord], b: Sequence[OpRecord]) -> Divergence | None:
    """The first op where ``a`` and ``b`` differ (None when they are identical).

    ``inputs_agree`` is True when that op has the same overload, arguments and
    input hashes in both, so only its outputs differ: that is the op to re-execute.
    """
    for i in range(min(len(a), len(b))):
        if a[i].input_key() != b[i].input_key():
            return Divergence(i, False)
        if a[i].output_key() != b[i].output_key():
            return Divergence(i, True)
    if len(a) != len(b):
        return Divergence(min(len(a), len(b)), False)
    return None


def check_header(trace: OpTrace, state_root: str, batch_root: str, batch_n: int) -> str | None:
    """Why ``trace`` does not commit to the agreed roots, or None."""
    if trace.state_root != state_root:
        return f"state root {trace.state_root[:16]}... is not the agreed {state_root[:16]}..."
    if trace.batch_root != batch_root or trace.batch_n != batch_n:
        return (
            f"batch root {trace.batch_root[:16]}... (n={trace.batch_n}) is not the step's "
            f"{batch_root[:16]}... (n={batch_n})"
        )
    return None


def check_links(trace: OpTrace, upto: int | None = None) -> LinkFailure | None:
    """The first link of ``trace`` (records ``0..upto``) that does not hold, or None.

    With ``upto=None`` the whole trace is checked, and so is batch coverage: a
    trace that never reads some batch leaf skipped part of the batch.
    """
    state_root = bytes.fromhex(trace.state_root)
    batch_root = bytes.fromhex(trace.batch_root)
    last = len(trace.records) - 1 if upto is None else min(upto, len(trace.records) - 1)
    used: set[int] = set()
    started: set[tuple[int, str]] = set()  # micro-batches read so far
    draws: dict[str, OpRecord] = {}  # generator -> the last random op drawing from it
    for r in trace.records[: last + 1]:
        if r.rng and not r.inputs:
            return LinkFailure(r.index, Finding.LINK, f"op {r.index} ({r.op}) is random but "
                               "reads no generator state")  # fmt: skip
        for k, inp in enumerate(r.inputs):
            bad = _check_link(trace, r, k, state_root, batch_root)
            if not bad and r.rng and k == len(r.inputs) - 1:
                bad = _check_generator_source(r, draws.get(r.generator))
            if bad:
                return LinkFailure(r.index, Finding.LINK, f"op {r.index} ({r.op}) input {k}: {bad}")
            if inp.link.kind == "batch" and inp.link.proof is not None:
                # micro-batches (the leaf name's first component) must start in order; the
                # tensors of one micro-batch may be read in any order (a loss may read its
                # labels before the model reads its inputs)
                name = (inp.link.name or "").split("/")[0]
                group = (len(name), name)  # "mb10" after "mb9", as the batch is consumed
                if group not in started and started and group < max(started):
                    return LinkFailure(
                        r.index,
                        Finding.COVERAGE,
                        f"op {r.index} first reads micro-batch {name!r} (leaf "
                        f"{inp.link.name!r}) after a later one: the batch was read out of order",
                    )
                started.add(group)
                used.add(inp.link.proof.index)
        if r.rng:
            draws[r.generator] = r
    if upto is None:
        missing = sorted(set(range(trace.batch_n)) - used)
        if missing:
            return LinkFailure(
                last + 1,
                Finding.COVERAGE,
                f"batch leaves {missing[:8]} of {trace.batch_n} are never read",
            )
    return None


def _check_link(
    trace: OpTrace, r: OpRecord, k: int, state_root: bytes, batch_root: bytes
) -> str | None:
    inp = r.inputs[k]
    link = inp.link
    if link.kind == "op":
        if not 0 <= link.op < r.index:
            return f"links to op {link.op}, which does not run before op {r.index}"
        src = trace.records[link.op]
        if not 0 <= link.out < len(src.out_hashes):
            return f"links to output {link.out} of op {link.op}, which has {len(src.out_hashes)}"
        if src.out_hashes[link.out] != inp.hash:
            return (
                f"hash {inp.hash[:16]}... is not output {link.out} of op {link.op} "
                f"({src.out_hashes[link.out][:16]}...)"
            )
        return None
    if link.kind in ("state", "batch"):
        root = state_root if link.kind == "state" else batch_root
        if link.proof is None or not verify_proof(root, link.proof):
            return f"the proof of {link.kind} leaf {link.name!r} does not verify against the root"
        if link.proof.leaf_hash.hex() != inp.hash:
            return f"hash {inp.hash[:16]}... is not {link.kind} leaf {link.name!r}"
        return None
    if link.kind == "const" and link.const is not None:
        if tensor_hash(const_tensor(link.const)) != inp.hash:
            return "the embedded constant does not hash to the input's hash"
        return None
    return f"unknown link kind {link.kind!r}"


def _check_generator_source(r: OpRecord, previous: OpRecord | None) -> str | None:
    """Why the generator state random op ``r`` reads is not where its generator stands.

    A generator's states form a chain: the state's RNG leaf of that generator,
    then the generator output (the last output) of each random op drawing from
    it, in trace order. Any other source, a state leaf read twice included, would
    let a party draw a mask the step did not draw.
    """
    link = r.inputs[-1].link
    if previous is None:
        expected = f"state leaf {rng_leaf(r.generator)!r}"
        ok = link.kind == "state" and link.name == rng_leaf(r.generator)
    else:
        expected = f"the generator output of op {previous.index}, the previous draw"
        last = len(previous.out_hashes) - 1
        ok = link.kind == "op" and (link.op, link.out) == (previous.index, last)
    if ok:
        return None
    source = {
        "op": f"output {link.out} of op {link.op}",
        "state": f"state leaf {link.name!r}",
        "batch": f"batch leaf {link.name!r}",
    }.get(link.kind, f"a {link.kind} link")
    return f"its {r.generator!r} generator state comes from {source}, not from {expected}"


InputFetcher = Callable[[OpRecord], Sequence[torch.Tensor]]


def referee(
    defender: OpTrace,
    challenger: OpTrace,
    *,
    state_root: str,
    batch_root: str,
    batch_n: int,
    fetch_inputs: InputFetcher,
    execute_in: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Verdict:
    """Settle one disputed step by re-executing at most one op (see the module docstring).

    ``fetch_inputs(record)`` returns the input tensors of ``record`` (from
    either party: they agree on them); they are checked against the record's
    hashes before use. The defender keeps the benefit of the doubt only where
    both traces are equally valid and nothing else decides. ``execute_in`` wraps
    the one re-executed call (strict mode: ``lambda: ree.deterministic(mode="strict")``).
    """
    parties = {DEFENDER: defender, CHALLENGER: challenger}
    bad_header = {p: check_header(t, state_root, batch_root, batch_n) for p, t in parties.items()}
    if any(bad_header.values()):
        return _one_loses(bad_header, Finding.HEADER, None)
    div = find_divergence(defender.records, challenger.records)
    if div is None:
        return Verdict(DEFENDER, Finding.AGREE, None, detail="the traces are identical")
    failures = {p: check_links(t, upto=div.index) for p, t in parties.items()}
    if any(failures.values()):
        return _first_failure_loses(failures)
    if not div.inputs_agree:
        coverage = {p: check_links(t) for p, t in parties.items()}
        if any(coverage.values()):
            verdict = _first_failure_loses(coverage)
            # the step went wrong where the traces part, whatever later op shows it
            return dataclasses.replace(verdict, op_index=div.index)
        return Verdict(
            None,
            Finding.PROGRAM,
            div.index,
            detail=f"op {div.index}: {_describe(defender, div.index)} vs "
            f"{_describe(challenger, div.index)}",
        )
    record = defender.records[div.index]
    expected = reexecute(record, fetch_inputs(record), execute_in)
    right = {p: t.records[div.index].out_hashes == expected for p, t in parties.items()}
    if right[DEFENDER] == right[CHALLENGER]:  # both cannot match: their outputs differ
        return Verdict(
            None,
            Finding.BOTH_WRONG,
            div.index,
            expected,
            1,
            detail=f"op {div.index} ({record.op}) matched neither party",
        )
    winner = DEFENDER if right[DEFENDER] else CHALLENGER
    return Verdict(
        winner,
        Finding.OUTPUT,
        div.index,
        expected,
        1,
        detail=f"op {div.index} ({record.op}) re-executed",
    )


def _describe(trace: OpTrace, i: int) -> str:
    return trace.records[i].op if i < len(trace.records) else "end of trace"


def _one_loses(reasons: dict[str, str | None], finding: Finding, op: int | None) -> Verdict:
    bad = [p for p, why in reasons.items() if why]
    if len(bad) == 2:
        return Verdict(None, finding, op, detail="; ".join(f"{p}: {reasons[p]}" for p in bad))
    winner = CHALLENGER if bad[0] == DEFENDER else DEFENDER
    return Verdict(winner, finding, op, detail=f"{bad[0]}: {reasons[bad[0]]}")


def _first_failure_loses(failures: dict[str, LinkFailure | None]) -> Verdict:
    bad = {p: f for p, f in failures.items() if f is not None}
    if len(bad) == 2:
        # both traces are broken; the one that breaks first is the one that lied first
        d, c = bad[DEFENDER], bad[CHALLENGER]
        if d.op == c.op:
            return Verdict(None, d.finding, d.op, detail=f"{d.detail}; {c.detail}")
        first = DEFENDER if d.op < c.op else CHALLENGER
        bad = {first: bad[first]}
    ((party, failure),) = bad.items()
    winner = CHALLENGER if party == DEFENDER else DEFENDER
    return Verdict(winner, failure.finding, failure.op, detail=f"{party}: {failure.detail}")
