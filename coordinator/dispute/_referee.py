"""The referee's check of one disputed step: re-execute it from the agreed state.

DESIGN.md, "A dispute (Verde)", level 3, as this issue scopes it: the referee
takes the REE checkpoint whose root is the agreed pre-state (either party's
evidence, CID- and root-checked, or, failing both, a replay from the task's
initial state), re-executes the whole disputed step, and says which party's
claimed post-state is right. A claim that the *next* step fails (the last
leaf of a failure commit) is checked by running that step too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coordinator.tasks import (
    BlobStore,
    Executor,
    RunRequest,
    TaskSpec,
    failure_digest,
    fetch_checkpoint,
)


@dataclass(frozen=True)
class Judgement:
    """The referee's findings for one step."""

    step: int
    true_root: str
    defender_right: bool
    challenger_right: bool
    evidence: str  # where the pre-state came from

    @property
    def defender_wins(self) -> bool:
        """The verdict: the defender keeps the benefit of the doubt when both claims hold."""
        return self.defender_right or not self.challenger_right


def _post_state(executor: Executor, spec: TaskSpec, bundle_dir: Path, start: Path | None,
                start_step: int, end_step: int, out: Path) -> tuple[str, Path | None]:  # fmt: skip
    res = executor.run(RunRequest(spec, bundle_dir, out, start_checkpoint=start, start_step=start_step,
                                  end_step=end_step, root_every=1, checkpoint_every=1))  # fmt: skip
    if res.failed:
        return res.error_digest, None
    return res.final_root, res.checkpoints[end_step]


def judge_step(*, executor: Executor, store: BlobStore, spec: TaskSpec, bundle_dir: Path,
               workdir: Path, step: int, agreed: str, claim_d: str, claim_c: str,
               evidence_cids: list[str]) -> Judgement:  # fmt: skip
    """Re-execute optimizer step ``step`` from the state with root ``agreed``; compare the claims."""
    pre: Path | None = None
    source = "replay from the initial state"
    for i, cid in enumerate(evidence_cids):
        try:
            pre = fetch_checkpoint(store, cid, agreed, workdir / f"evidence-{i}.safetensors")
            source = f"evidence {cid}"
            break
        except Exception:  # noqa: S112 - a party's bad evidence is its loss; try the next one
            continue
    if pre is None:  # neither party gave a checkpoint with the agreed root: replay the prefix
        root, pre = _post_state(executor, spec, bundle_dir, None, 0, step - 1, workdir / "replay")
        if pre is None or root != agreed:
            pre = None
    if pre is None:
        # the agreed pre-state is not reproducible: it is itself a failure; the step cannot run
        true = failure_digest(step - 1)
        return Judgement(step, true, claim_d == true, claim_c == true, source)
    true, post = _post_state(executor, spec, bundle_dir, pre, step - 1, step, workdir / "step")
    right = {claim_d: False, claim_c: False}
    for claim in (claim_d, claim_c):
        if claim == true:
            right[claim] = True
        elif post is not None and claim == failure_digest(step + 1) and step < spec.steps:
            nxt, nxt_post = _post_state(
                executor, spec, bundle_dir, post, step, step + 1, workdir / "next"
            )
            right[claim] = nxt_post is None and nxt == claim
    return Judgement(step, true, right[claim_d], right[claim_c], source)
