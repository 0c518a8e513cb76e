"""An executor's side of dispute level 3: record one step's operator trace for the parties.

DESIGN.md, "A dispute (Verde)", level 3. When a :class:`RunRequest` carries
``op_trace`` (a list of op indices whose inputs to keep), the executor runs its
one step ``start_step -> end_step`` inside :func:`traced_step`: the state tree
of step k-1 (captured right before the step, referencing the live tensors) and
the step's batch tensors by name go to :class:`ree.optrace.OpTracer`; the
trace is written as canonical JSON and the kept inputs as safetensors (never
pickle), and their paths go back in the :class:`RunResult`.

A step that cannot be traced (its code reads a tensor that is neither state,
batch nor an earlier op's output, or draws random numbers between the capture
and the step), or whose trace would not pass :func:`ree.optrace.check_links`
(a batch tensor that no op reads), is not an error of the run: :attr:`StepTrace.error` says why,
and the parties fall back to re-executing the whole step.

The adversary hooks of the tests (``RunRequest.fault``) live here too, so a
faulty solver's trace and its committed roots come from the same program:

* ``{"ulp_op": [k, i]}``: op ``i`` of step ``k`` returns its first output one
  ulp up at its first element (a machine that miscomputes one op);
* ``{"inconsistent_op": [k, i]}``: the same computation, but the trace records
  op ``i``'s honest output hash, so its links do not hold downstream.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from coordinator.tasks import RunRequest
from ree._state import StateTree
from ree.optrace import OpTraceError, OpTracer, check_links, save_op_inputs

__all__ = ["StepTrace", "fault_mode", "named_batch", "traced_step"]


def named_batch(micro_batches: list[Any]) -> dict[str, torch.Tensor]:
    """The batch leaves of one step: ``mb0000/0000``... for each tensor of each micro-batch, in order."""
    out: dict[str, torch.Tensor] = {}
    for m, mb in enumerate(micro_batches):
        items = mb if isinstance(mb, tuple | list) else (mb,)
        for j, t in enumerate(items):
            if isinstance(t, torch.Tensor):
                out[f"mb{m:04d}/{j:04d}"] = t
    return out


def _nudge(out: Any) -> None:
    """One ulp up at element 0 of the first floating output, in place, version untouched."""
    first = out[0] if isinstance(out, tuple | list) and out else out
    if not (isinstance(first, torch.Tensor) and first.is_floating_point() and first.numel()):
        return
    if first.dtype not in (torch.float32, torch.float64) or first.device.type != "cpu":
        return
    with _disable_current_modes():
        arr = first.detach().numpy()  # a view: writing through numpy bumps no version counter
        at = (0,) * arr.ndim
        arr[at] = np.nextafter(arr[at], np.inf, dtype=arr.dtype)


def _fault_target(req: RunRequest, step: int) -> tuple[str, int] | None:
    for kind in ("ulp_op", "inconsistent_op"):
        f = req.fault.get(kind)
        if f is not None and int(f[0]) == step:
            return kind, int(f[1])
    return None


class _UlpMode(TorchDispatchMode):
    """Counts the step's aten ops as :class:`OpTracer` does and nudges op ``target``."""

    def __init__(self, target: int) -> None:
        super().__init__()
        self.target, self.index = target, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.namespace != "aten":
            return out
        if self.index == self.target:
            _nudge(out)
        self.index += 1
        return out


def fault_mode(req: RunRequest, step: int) -> Any:
    """The context an untraced step ``step`` runs in: a one-op fault for adversaries, else nothing."""
    hit = _fault_target(req, step)
    return nullcontext() if hit is None else _UlpMode(hit[1])


class _UlpTracer(OpTracer):
    target = -1

    def _execute(self, index: int, func: Any, args: Any, kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        if index == self.target:
            _nudge(out)
        return out


class _InconsistentTracer(OpTracer):
    target = -1

    def _expected(self, link: Any, t: torch.Tensor) -> tuple[str, str]:
        h = super()._expected(link, t)[1]
        return h, h  # trusts identity: no self-check, so the stale link survives

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        index = len(self.trace.records)
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if index == self.target:
            _nudge(out)  # after the honest output hash was recorded
        return out


@dataclass
class StepTrace:
    """What :func:`traced_step` wrote: the trace, the kept inputs, or why there is no trace."""

    path: Path | None = None
    inputs: dict[int, Path] = field(default_factory=dict)
    error: str = ""


@contextmanager
def traced_step(req: RunRequest, state: StateTree, batch: Mapping[str, torch.Tensor],
                step: int) -> Iterator[StepTrace]:  # fmt: skip
    """Run the block (one whole step ``step``) under an :class:`OpTracer`; write its trace.

    ``state`` is the tree of step ``step - 1`` captured with the RNG leaves right
    before the step; ``batch`` the step's input tensors (:func:`named_batch`).
    Exceptions of the step itself propagate (a failure commit); a step that
    cannot be traced leaves :attr:`StepTrace.error` set instead.
    """
    out = StepTrace()
    hit = _fault_target(req, step)
    cls: type[OpTracer] = OpTracer
    if hit is not None:
        base = _UlpTracer if hit[0] == "ulp_op" else _InconsistentTracer
        cls = type(base.__name__, (base,), {"target": hit[1]})
    keep = sorted(set(req.op_trace or ()))
    tracer = cls(state, batch, step=step, keep=keep)
    try:
        with tracer:
            yield out
    except OpTraceError as e:
        out.error = f"step {step} cannot be traced: {e}"
        return
    if hit is None:  # an honest trace must pass the referee's own check, coverage included
        bad = check_links(tracer.trace)
        if bad is not None:  # e.g. a batch tensor no op reads (an unused key of a dict batch)
            out.error = f"step {step}'s trace would not pass the link check: {bad.detail}"
            return
    req.out_dir.mkdir(parents=True, exist_ok=True)
    path = req.out_dir / f"optrace-{step:08d}.json"
    path.write_bytes(tracer.trace.dumps())
    out.path = path
    for i in keep:
        if i >= len(tracer.trace.records):
            continue
        p = req.out_dir / f"op-{i}-inputs.safetensors"
        save_op_inputs(p, tracer.trace.records[i], tracer.kept[i])
        out.inputs[i] = p
