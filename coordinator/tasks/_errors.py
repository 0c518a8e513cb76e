"""Errors of the task layer: specs, bundles, runs and the client API."""

from __future__ import annotations

from ree._errors import GensynError


class TaskError(GensynError):
    """Something about a task went wrong; the message says what and what to do."""


class TaskSpecError(TaskError, ValueError):
    """A TaskSpec field is missing, malformed, or names something that is not captured."""


class TaskBundleError(TaskError, ValueError):
    """A task bundle is malformed, incomplete, or does not match its CIDs."""


class TaskRunError(TaskError, RuntimeError):
    """The executor could not run a task (not the user's code failing: that is a failure commit)."""


class TaskTimeoutError(TaskError, TimeoutError):
    """A task did not reach the awaited state in time."""


class ResultVerificationError(TaskError, ValueError):
    """A fetched result does not hash to the root committed on chain: it must not be used."""
