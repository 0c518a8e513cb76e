"""Levels 1 and 2 of a dispute, off chain: what a party answers at each move.

DESIGN.md, "A dispute (Verde)": level 1 bisects over the committed interval
roots; level 2 bisects over per-step roots inside the first disagreeing
interval, recomputed from that interval's starting REE checkpoint, and the
tree must agree with both committed endpoints; then each party posts the
evidence for the disputed step (here the CID of its REE checkpoint just
before it, or its operator trace of that step when its executor can record
one: :meth:`PartyRun.op_trace`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.tasks import Executor, RunRequest, RunResult, TaskSpec
from ree._merkle import MerkleTree


def trace_tree(roots: list[bytes]) -> MerkleTree:
    """The tree over raw state roots, as the chain checks it: leaf hash = sha256(root)."""
    return MerkleTree([hashlib.sha256(r).digest() for r in roots])


@dataclass
class PartyRun:
    """A party's view of one task: its full run (trace + interval checkpoints) and how to recompute.

    ``fault`` is passed to every recomputation, so an adversary that perturbs a
    step reproduces its own (wrong) roots consistently.
    """

    spec: TaskSpec
    bundle_dir: Path
    workdir: Path
    result: RunResult
    executor: Executor
    fault: dict[str, Any] = field(default_factory=dict)
    _steps: dict[int, RunResult] = field(default_factory=dict)
    _traces: dict[tuple[int, tuple[int, ...]], RunResult] = field(default_factory=dict)

    @property
    def roots(self) -> list[bytes]:
        """The committed interval roots (level-1 leaves)."""
        return list(self.result.trace.roots_raw)

    def level1(self, index: int) -> tuple[bytes, list[bytes]]:
        """Leaf ``index`` of the committed trace and its proof."""
        roots = self.roots
        return roots[index], list(trace_tree(roots).proof(index).siblings)

    def interval_run(self, interval: int, steps: int) -> RunResult:
        """Per-step roots and checkpoints of ``interval``, recomputed from its starting checkpoint."""
        if interval not in self._steps:
            ci = self.spec.commit_interval
            start, end = interval * ci, min((interval + 1) * ci, steps)
            req = RunRequest(
                self.spec, self.bundle_dir, self.workdir / f"interval-{interval}",
                start_checkpoint=self.result.checkpoints[start], start_step=start, end_step=end,
                root_every=1, checkpoint_every=1, fault=self.fault,
            )  # fmt: skip
            self._steps[interval] = self.executor.run(req)
        return self._steps[interval]

    def step_roots(self, interval: int, steps: int) -> list[bytes]:
        """Level-2 leaves: the state root after each step of ``interval``, its start first.

        The last leaf is the committed interval end, so that for a failure
        commit it is the failure digest.
        """
        run = self.interval_run(interval, steps)
        roots = list(run.trace.roots_raw)
        roots[-1] = self.roots[interval + 1]
        return roots

    def level2(self, interval: int, steps: int, index: int) -> tuple[bytes, list[bytes]]:
        """Step leaf ``index`` inside ``interval`` and its proof."""
        roots = self.step_roots(interval, steps)
        return roots[index], list(trace_tree(roots).proof(index).siblings)

    def step_commitment(self, interval: int, steps: int) -> tuple[bytes, list[bytes], list[bytes]]:
        """The step-root tree's root, and the proofs of its first and last leaves."""
        t = trace_tree(self.step_roots(interval, steps))
        return t.root, list(t.proof(0).siblings), list(t.proof(t.n - 1).siblings)

    def checkpoint_before(self, step: int, steps: int) -> Path:
        """This party's REE checkpoint at ``step - 1`` (the agreed state of the disputed step)."""
        ci = self.spec.commit_interval
        before = step - 1
        if before in self.result.checkpoints:
            return self.result.checkpoints[before]
        return self.interval_run(before // ci, steps).checkpoints[before]

    def op_trace(self, step: int, steps: int, keep: tuple[int, ...] = ()) -> RunResult:
        """This party's run of the one step ``step`` under the op tracer, keeping op inputs ``keep``.

        The result's ``op_trace`` is None (and ``op_trace_error`` says why) when
        the executor cannot trace the step; the party then posts its checkpoint.
        """
        key = (step, tuple(sorted(keep)))
        if key not in self._traces:
            req = RunRequest(
                self.spec, self.bundle_dir, self.workdir / f"optrace-{step}-{'-'.join(map(str, key[1]))}",
                start_checkpoint=self.checkpoint_before(step, steps), start_step=step - 1,
                end_step=step, root_every=1, checkpoint_every=1, fault=self.fault,
                op_trace=list(key[1]),
            )  # fmt: skip
            self._traces[key] = self.executor.run(req)
        return self._traces[key]
