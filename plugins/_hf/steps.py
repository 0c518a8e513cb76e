"""What an executor run of the Trainer or Accelerate runs each optimizer step in: a dispute's tracer.

DESIGN.md, "A dispute (Verde)", level 3. When a :class:`RunRequest` carries
``op_trace``, its one step ``start_step -> end_step`` runs under
:func:`plugins._optrace.traced_step`; every other step runs in
:func:`plugins._optrace.fault_mode` (nothing, except for a test's adversary), so
a faulty solver's committed roots and its trace come from the same program.

Neither framework hands its loop to the executor, so a :class:`StepScope` is
opened by a hook when a step's first micro-batch starts (``GensynCallback.on_step_begin``,
the executor ``Accelerator``'s training loader as it yields) and closed by
another when the optimizer and scheduler have stepped, or with the exception that
stopped the step. The state of step k-1 is captured when the scope opens, before
strict mode is entered; strict mode is entered next and the tracer last, on top
of it, so the tracer records the step's own aten ops and strict mode runs them
(as :mod:`ree.optrace` documents, and the referee re-executes them).

An :class:`ree.optrace.OpTraceError` in the step, or in the chain of an
exception that a framework wrapped around one, is recorded in
:attr:`StepScope.traced` (``error``); the run then returns ``op_trace_error``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

from coordinator.tasks import RunRequest
from plugins._optrace import StepTrace, fault_mode, named_batch, traced_step
from ree._state import StateTree
from ree.optrace import OpTraceError

__all__ = ["StepScope", "op_trace_error", "step_batch"]


def step_batch(micro_batches: Sequence[Any]) -> dict[str, torch.Tensor]:
    """The batch leaves of one step: :func:`plugins._optrace.named_batch`, a mapping's tensors in key order.

    The Trainer's and most loaders' micro-batches are dicts; their key order is
    the collator's, which is usually the order the step reads them in.
    """
    flat = [tuple(mb.values()) if isinstance(mb, Mapping) else mb for mb in micro_batches]
    return named_batch(flat)


def op_trace_error(exc: BaseException | None) -> OpTraceError | None:
    """The :class:`OpTraceError` that ``exc`` is, or that it was raised from (a framework's wrapper)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OpTraceError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class StepScope:
    """The context of each optimizer step of one run request; see the module docstring."""

    def __init__(self, req: RunRequest) -> None:
        """Trace step ``req.end_step`` when ``req.op_trace`` asks for it; apply ``req.fault`` to the others."""
        self.req = req
        self.target = req.end_step if req.op_trace is not None else None
        self.traced = StepTrace()
        self.step = 0  # the step of the scope last opened
        self._cm: AbstractContextManager[Any] | None = None

    @property
    def is_open(self) -> bool:
        """True between :meth:`begin` and :meth:`end`."""
        return self._cm is not None

    @property
    def tracing(self) -> bool:
        """True while the traced step runs."""
        return self._cm is not None and self.step == self.target

    def begin(self, step: int, capture: Callable[[], StateTree],
              batches: Callable[[], Sequence[Any]], before: Callable[[], None]) -> None:  # fmt: skip
        """Open step ``step``'s context: capture the state (traced step), call ``before`` (strict mode), enter.

        ``capture`` gives the state tree of step ``step - 1`` with its RNG leaves,
        referencing the live tensors; ``batches`` the step's micro-batches, all
        fetched already.
        """
        self.end()
        cm: AbstractContextManager[Any]
        if step == self.target:
            cm = self._traced(capture(), step_batch(batches()), step)
        else:
            cm = fault_mode(self.req, step)
        before()
        cm.__enter__()
        self._cm, self.step = cm, step

    def end(self, exc: BaseException | None = None) -> None:
        """Leave the step's context; ``exc``: the exception that stopped the step, if one did.

        An :class:`OpTraceError` in ``exc``'s chain is recorded (no trace is
        written); any other exception is the caller's to raise (a failure commit).
        """
        cm, self._cm = self._cm, None
        if cm is None:
            return
        if exc is None:
            cm.__exit__(None, None, None)
            return
        err = op_trace_error(exc) or exc
        cm.__exit__(type(err), err, err.__traceback__)

    def fail(self, why: str) -> None:
        """The traced step does something the tracer cannot see: record ``why`` and leave it."""
        if self.tracing:
            self.end(OpTraceError(why))

    def finish(self) -> StepTrace:
        """The traced step's result once the run is over; an error if it never ran under the tracer."""
        self.end()
        if self.target is not None and self.traced.path is None and not self.traced.error:
            self.traced.error = (
                f"step {self.target} never ran under the tracer: the executor saw no training "
                "batch start it"
            )
        return self.traced

    @contextmanager
    def _traced(self, state: StateTree, batch: Mapping[str, torch.Tensor],
                step: int) -> Iterator[None]:  # fmt: skip
        with traced_step(self.req, state, batch, step) as out:
            self.traced = out
            yield
