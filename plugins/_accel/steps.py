"""An executor run's optimizer steps under Accelerate: how many batches a step reads, and its scope.

DESIGN.md, "A dispute (Verde)", level 3. The executor-role
:class:`plugins._accel.accelerator.Accelerator` opens a step's
:class:`plugins._hf.steps.StepScope` at the step's first batch and fetches the
step's later micro-batches ahead then (:func:`later_micro_batches` says how
many). What it cannot trace ends the scope with one of the reasons here, which
the run returns as ``op_trace_error``.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugins._accel.accelerator import Accelerator
    from plugins._accel.data import TracedDataLoaderShard
    from plugins._hf.steps import StepScope

__all__ = [
    "EARLY",
    "LEFT",
    "UNCOUNTED",
    "UNFETCHED",
    "end_step_at_excepthook",
    "later_micro_batches",
    "step_scope",
]

UNCOUNTED = (
    "the step reads another batch before its optimizer step, beyond the {n} that accelerate's "
    "gradient accumulation gives it: the loop accumulates on its own, so its later batches "
    "could not be fetched ahead and named before the step started (use "
    "Accelerator(gradient_accumulation_steps=...) and accelerator.accumulate)"
)
UNFETCHED = (
    "a micro-batch of the step did not step the optimizer, and the pass holds no later batch "
    "of the step: the step runs on into the next pass (sync_with_dataloader=False), whose "
    "batches cannot be fetched and named before the step starts"
)
EARLY = (
    "the optimizer stepped before the step read the {n} later micro-batches fetched ahead for "
    "it: the loop steps without accelerator.accumulate, so accelerate's "
    "gradient_accumulation_steps does not say how many batches a step reads"
)
LEFT = "the step left its region (a new pass, a root, a save) before its optimizer step"


def later_micro_batches(acc: Any, loader: TracedDataLoaderShard) -> int:
    """How many more batches accelerate's ``accumulate`` feeds the step that starts with this one.

    ``acc`` is accelerate's ``Accelerator``: its ``_do_sync`` counts micro-batches
    in ``acc.step`` and syncs at every ``num_steps``-th, or at the pass's last
    batch (``sync_with_dataloader``), where
    :meth:`plugins._accel.data.TracedDataLoaderShard.fetch_ahead` stops too.
    """
    state = acc.gradient_state
    if state.sync_with_dataloader and loader.end_of_dataloader:
        return 0
    return (-(int(acc.step) + 1)) % int(state.num_steps)


def step_scope(request: dict[str, Any]) -> StepScope:
    """The step scope of a run request (``RunRequest.to_json()``)."""
    from coordinator.tasks import RunRequest
    from plugins._hf.steps import StepScope

    return StepScope(RunRequest.from_json(request))


def end_step_at_excepthook(acc: Accelerator) -> None:
    """Install an ``excepthook`` that ends ``acc``'s step with the exception ending the script.

    An exception in the user's own loss code (an ``OpTraceError`` among them)
    may reach no accelerator hook: the step's scope records it before
    ``Accelerator._write_partial`` runs, and strict mode is off before the
    process's exit handlers run.
    """
    ref = weakref.ref(acc)
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        try:
            live = ref()
            if live is not None:
                live._end_step(value)
        finally:
            previous(kind, value, tb)

    sys.excepthook = hook
