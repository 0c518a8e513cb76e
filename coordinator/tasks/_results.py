"""Run manifests: a solver's trace and REE checkpoints, published under one CID.

The manifest (canonical JSON) names the task, the trace and, for each
checkpoint, its step, state root and CID. The solver commits its CID on chain
(``manifestCid``), and the final checkpoint's CID as ``resultCid``. The same
format, unfinished, is the progress manifest another solver resumes from.

A manifest may also carry ``metrics``: for each optimizer step, what the run
logged at that step (at least the training ``loss``). The client reads them
from progress manifests while the task runs, to drive the user's progress bar
and loggers. Older manifests have none; readers treat that as no metrics.
Non-finite values are stored as the strings ``"nan"``, ``"inf"``, ``"-inf"``
(canonical JSON has no NaN).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.tasks._bundle import BlobStore, get_json, get_verified, put_checked, put_json
from coordinator.tasks._errors import TaskBundleError
from coordinator.tasks._run import RunResult
from ree._trace import Trace

RUN_FORMAT = "gensyn-run/1"
METRICS_FILE = "gensyn-metrics.json"
"""A sidecar an executor may write next to its checkpoints: ``{"steps": {step: {name: value}}}``."""
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

Metrics = dict[int, dict[str, float]]


@dataclass(frozen=True)
class RunManifest:
    """A published run: the trace and ``{step: (root, cid)}`` of its checkpoints."""

    cid: str
    spec_cid: str
    trace: Trace
    checkpoints: dict[int, tuple[str, str]]
    failed: bool = False
    metrics: Metrics = field(default_factory=dict)

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
    metrics = run_metrics(result)
    if metrics:
        doc["metrics"] = {str(s): {k: _encode(v) for k, v in m.items()} for s, m in sorted(metrics.items())}
    return RunManifest(put_json(store, doc), spec_cid, result.trace, cks, result.failed, metrics)


def run_metrics(result: RunResult) -> Metrics:
    """Per-step metrics of ``result``: its ``losses`` (they end at ``steps_done``), then any sidecars.

    A sidecar (:data:`METRICS_FILE`) is read from each folder that holds one of
    the run's checkpoints, so a run merged from segments keeps every segment's metrics.
    """
    out: Metrics = {}
    first = result.steps_done - len(result.losses) + 1
    for i, loss in enumerate(result.losses):
        if first + i >= 1:  # an executor that reported more losses than steps: keep the last ones
            out[first + i] = {"loss": float(loss)}
    for folder in sorted({Path(p).parent for p in result.checkpoints.values()}):
        side = folder / METRICS_FILE
        if not side.is_file():
            continue
        try:
            steps = json.loads(side.read_text())["steps"]
            for step, values in steps.items():
                s = int(step)
                if 0 < s <= result.steps_done:
                    out.setdefault(s, {}).update(_plain(values))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a sidecar is a courtesy for the client's display; a bad one is skipped
    return out


def write_metrics(folder: Path, metrics: Mapping[int, Mapping[str, float]]) -> Path:
    """Write the :data:`METRICS_FILE` sidecar that :func:`run_metrics` reads (non-finite values as strings)."""
    doc = {"steps": {str(s): {k: _encode(float(v)) for k, v in m.items()}
                     for s, m in sorted(metrics.items())}}  # fmt: skip
    path = Path(folder) / METRICS_FILE
    path.write_text(json.dumps(doc, sort_keys=True))
    return path


def _plain(values: Mapping[str, object]) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            continue
        try:
            out[str(k)] = _decode(v)
        except ValueError:
            continue
    return out


def _encode(v: float) -> float | str:
    if math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _decode(v: object) -> float:
    if isinstance(v, str):
        if v not in _NONFINITE:
            raise ValueError(f"{v!r} is not a metric value")
        return _NONFINITE[v]
    return float(v)  # type: ignore[arg-type]


def load_run(store: BlobStore, cid: str) -> RunManifest:
    """Fetch and check a run manifest."""
    doc: Any = get_json(store, cid)
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise TaskBundleError(f"{cid} is not a {RUN_FORMAT} manifest")
    try:
        cks = {int(c["step"]): (str(c["root"]), str(c["cid"])) for c in doc["checkpoints"]}
        metrics = {int(s): {str(k): _decode(v) for k, v in m.items()}
                   for s, m in dict(doc.get("metrics") or {}).items()}  # fmt: skip
        return RunManifest(
            cid, str(doc["spec"]), Trace.from_json(doc["trace"]), cks, bool(doc["failed"]), metrics
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TaskBundleError(f"run manifest {cid} is malformed: {e}") from e


def fetch_checkpoint(store: BlobStore, cid: str, root: str, dest: Path) -> Path:
    """Fetch an REE checkpoint by CID into ``dest`` and check it hashes to ``root``."""
    import ree

    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(get_verified(store, cid))
    ree.load_checkpoint(dest, expected_root=root)
    return dest
