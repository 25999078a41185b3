"""Run and task states: one word each, and the questions every view asks of them.

Stored in SQLite as their string values (``StrEnum``), so a state compares equal to its text and
old databases read back unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    """Never stored: a pending or running run whose driving process is gone (see run_state_now)."""

    @property
    def finished(self) -> bool:
        """Over: nothing drives it (a finished run can still be resumed unless it succeeded)."""
        return self in _FINISHED_RUNS

    @property
    def active(self) -> bool:
        return self in (RunState.PENDING, RunState.RUNNING)

    @property
    def failed(self) -> bool:
        return self is RunState.FAILED

    @property
    def resumable(self) -> bool:
        return self in (RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED)


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    """Never stored: a pending or running task of an ``interrupted`` run (its driver is gone). It
    is over (no clock runs for it) but not failed: resuming the run runs it again."""

    @property
    def finished(self) -> bool:
        return self not in (TaskState.PENDING, TaskState.RUNNING)

    @property
    def active(self) -> bool:
        return self is TaskState.RUNNING

    @property
    def failed(self) -> bool:
        """It did not produce its outputs, so what depends on it cannot run."""
        return self in (TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED)

    @property
    def done(self) -> bool:
        """Settled for good: a resume never runs it again."""
        return self in (TaskState.SUCCEEDED, TaskState.SKIPPED)

    @property
    def retryable(self) -> bool:
        return self.failed


_FINISHED_RUNS = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED})

STORED_RUN_STATES: tuple[str, ...] = tuple(s.value for s in RunState if s is not RunState.INTERRUPTED)
TASK_STATES: tuple[str, ...] = tuple(s.value for s in TaskState)
"""Every state a view may show."""
STORED_TASK_STATES: tuple[str, ...] = tuple(s.value for s in TaskState if s is not TaskState.INTERRUPTED)
