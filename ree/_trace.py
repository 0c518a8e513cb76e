"""The trace of a run: state roots every ``commit_interval`` optimizer steps.

DESIGN.md, "Merkle trees" (normative): a trace is a tree over interval roots;
leaf 0 is the root of the initial state, which goes on chain with the task, so
every bisection has an agreed left end. Leaf i >= 1 is the root after step
``i * commit_interval``; when the run ends between two boundaries, one last
leaf holds the final root. A trace leaf's encoding is the raw 32-byte state
root, so its leaf hash is ``sha256(root)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ree._encoding import canonical_json
from ree._errors import TraceError
from ree._merkle import MerkleTree, Proof

TRACE_FORMAT = "ree-trace/1"


def _raw(root: str | bytes) -> bytes:
    if isinstance(root, bytes | bytearray):
        raw = bytes(root)
    else:
        try:
            raw = bytes.fromhex(root.lower().removeprefix("0x"))
        except ValueError:
            raise TraceError(f"state root {root!r} is not hex") from None
    if len(raw) != 32:
        raise TraceError(f"a state root is 32 bytes, got {len(raw)} ({root!r:.80})")
    return raw


@dataclass
class Trace:
    """Interval roots of one run, with the step each was taken at."""

    commit_interval: int = 1
    steps: list[int] = field(default_factory=list)
    roots_raw: list[bytes] = field(default_factory=list)
    final: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.commit_interval, int) or self.commit_interval < 1:
            raise TraceError(f"commit_interval must be an int >= 1, got {self.commit_interval!r}")

    # ------------------------------------------------------------------ recording
    def start(self, root: str | bytes, step: int = 0) -> None:
        """Record leaf 0, the initial state (``step`` is 0 unless the run resumed a trace)."""
        if self.steps:
            raise TraceError("the trace already has its initial root")
        self.steps.append(int(step))
        self.roots_raw.append(_raw(root))

    def due(self, step: int) -> bool:
        """True when the root after optimizer step ``step`` belongs in the trace."""
        return step > 0 and step % self.commit_interval == 0

    def record(self, step: int, root: str | bytes) -> None:
        """Record the root after optimizer step ``step`` (a commit boundary)."""
        self._check_next(step)
        if not self.due(step):
            raise TraceError(
                f"step {step} is not a multiple of commit_interval={self.commit_interval}; "
                "use finish() for the final partial interval"
            )
        self.steps.append(int(step))
        self.roots_raw.append(_raw(root))

    def finish(self, step: int, root: str | bytes) -> None:
        """Close the trace at the run's last step, adding a leaf if it fell between boundaries."""
        if self.steps and self.steps[-1] == step:
            if self.roots_raw[-1] != _raw(root):
                raise TraceError(f"final root for step {step} differs from the one recorded")
        else:
            self._check_next(step)
            self.steps.append(int(step))
            self.roots_raw.append(_raw(root))
        self.final = True

    def _check_next(self, step: int) -> None:
        if not self.steps:
            raise TraceError("record the initial root with start() first")
        if self.final:
            raise TraceError("the trace is finished; nothing can follow the final root")
        if step <= self.steps[-1]:
            raise TraceError(f"step {step} does not follow the last recorded step {self.steps[-1]}")

    # ------------------------------------------------------------------ reading
    @property
    def roots(self) -> list[str]:
        """The interval roots in hex, leaf 0 first."""
        return [r.hex() for r in self.roots_raw]

    @property
    def n(self) -> int:
        """The leaf count N committed with the trace root."""
        return len(self.roots_raw)

    @property
    def num_steps(self) -> int:
        """Optimizer steps covered so far."""
        return self.steps[-1] if self.steps else 0

    def merkle(self) -> MerkleTree:
        """The tree over the interval roots."""
        if not self.roots_raw:
            raise TraceError("an empty trace has no root; call start() first")
        return MerkleTree([hashlib.sha256(r).digest() for r in self.roots_raw])

    @property
    def root(self) -> str:
        """The trace root in hex."""
        return self.merkle().root.hex()

    def proof(self, index: int) -> Proof:
        """Inclusion proof of interval root ``index`` against :attr:`root`."""
        return self.merkle().proof(index)

    # ------------------------------------------------------------------ serialization
    def to_json(self) -> dict[str, Any]:
        """A plain dict; :meth:`dumps` gives its canonical bytes."""
        return {
            "format": TRACE_FORMAT,
            "commit_interval": self.commit_interval,
            "steps": list(self.steps),
            "roots": self.roots,
            "final": self.final,
        }

    def dumps(self) -> bytes:
        """Canonical JSON bytes: the same trace always serializes the same way."""
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: dict[str, Any] | str | bytes) -> Trace:
        """Inverse of :meth:`to_json` / :meth:`dumps`, with every field checked."""
        if isinstance(obj, str | bytes):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as e:
                raise TraceError(f"trace is not JSON: {e}") from e
        if not isinstance(obj, dict) or obj.get("format") != TRACE_FORMAT:
            raise TraceError(f"not a {TRACE_FORMAT} document")
        steps, roots = obj.get("steps"), obj.get("roots")
        if not isinstance(steps, list) or not isinstance(roots, list) or len(steps) != len(roots):
            raise TraceError("trace steps and roots must be lists of equal length")
        t = cls(commit_interval=obj.get("commit_interval"))  # type: ignore[arg-type]
        if steps:
            t.start(roots[0], steps[0])
            for i, (s, r) in enumerate(zip(steps[1:], roots[1:], strict=True), start=1):
                if obj.get("final") and i == len(steps) - 1 and not t.due(s):
                    t.finish(s, r)
                else:
                    t.record(s, r)
        if obj.get("final"):
            t.final = True
        return t
