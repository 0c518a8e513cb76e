"""Run manifests: a solver's trace and REE checkpoints, published under one CID.

The manifest (canonical JSON) names the task, the trace and, for each
checkpoint, its step, state root and CID. The solver commits its CID on chain
(``manifestCid``), and the final checkpoint's CID as ``resultCid``. The same
format, unfinished, is the progress manifest another solver resumes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.tasks._bundle import BlobStore, get_json, get_verified, put_checked, put_json
from coordinator.tasks._errors import TaskBundleError
from coordinator.tasks._run import RunResult
from ree._trace import Trace

RUN_FORMAT = "gensyn-run/1"


@dataclass(frozen=True)
class RunManifest:
    """A published run: the trace and ``{step: (root, cid)}`` of its checkpoints."""

    cid: str
    spec_cid: str
    trace: Trace
    checkpoints: dict[int, tuple[str, str]]
    failed: bool = False

    def latest(self) -> tuple[int, str, str]:
        """(step, root, cid) of the last checkpoint."""
        step = max(self.checkpoints)
        return (step, *self.checkpoints[step])


def publish_run(store: BlobStore, spec_cid: str, result: RunResult,
                only_steps: set[int] | None = None) -> RunManifest:  # fmt: skip
    """Store the checkpoints of ``result`` (all, or ``only_steps``) and its manifest."""
    import ree

    cks: dict[int, tuple[str, str]] = {}
    for step, path in sorted(result.checkpoints.items()):
        if only_steps is not None and step not in only_steps:
            continue
        root = ree.load_checkpoint(path).root
        cks[step] = (root, put_checked(store, Path(path).read_bytes()))
    doc = {
        "format": RUN_FORMAT, "spec": spec_cid, "trace": result.trace.to_json(), "failed": result.failed,
        "checkpoints": [{"step": s, "root": r, "cid": c} for s, (r, c) in sorted(cks.items())],
    }  # fmt: skip
    return RunManifest(put_json(store, doc), spec_cid, result.trace, cks, result.failed)


def load_run(store: BlobStore, cid: str) -> RunManifest:
    """Fetch and check a run manifest."""
    doc: Any = get_json(store, cid)
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise TaskBundleError(f"{cid} is not a {RUN_FORMAT} manifest")
    try:
        cks = {int(c["step"]): (str(c["root"]), str(c["cid"])) for c in doc["checkpoints"]}
        return RunManifest(
            cid, str(doc["spec"]), Trace.from_json(doc["trace"]), cks, bool(doc["failed"])
        )
    except (KeyError, TypeError, ValueError) as e:
        raise TaskBundleError(f"run manifest {cid} is malformed: {e}") from e


def fetch_checkpoint(store: BlobStore, cid: str, root: str, dest: Path) -> Path:
    """Fetch an REE checkpoint by CID into ``dest`` and check it hashes to ``root``."""
    import ree

    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(get_verified(store, cid))
    ree.load_checkpoint(dest, expected_root=root)
    return dest
