"""Workflow run log lines as people read them: a level per line, one text format, a store tail.

The CLI (``smoltui logs``) and the TUI log pane both print :func:`format_line`, so a line reads the
same everywhere. :class:`RunLogTail` follows the ``run_events`` table of the store (migration 3),
which another process may be writing (``smoltui run`` in a second terminal): event ids are one
global ``INTEGER PRIMARY KEY`` sequence, so "everything new" is one indexed query on ``id > ?``.

No Textual here: the orchestrator never imports the UI.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from smoltui.orchestrator.run_store import RunEventRecord, RunStore
from smoltui.orchestrator.states import TaskState
from smoltui.safe_text import printable

Level = Literal["error", "warning", "info"]
LEVELS: tuple[Level, ...] = ("info", "warning", "error")
LEVEL_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}

_ERROR_STATES = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED})
_WARNING_STATES = frozenset({TaskState.CANCELLED})
_RETRY = re.compile(r"^attempt \d+/\d+ failed\b")
_COLUMNS = "id, run_id, task_id, kind, message, created_at"

DEFAULT_BACKFILL = 2_000
DEFAULT_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One run event with its level (``error`` / ``warning`` / ``info``)."""

    id: int
    run_id: str
    task_id: str | None
    kind: str
    message: str
    created_at: float
    level: Level = "info"

    @classmethod
    def from_event(cls, event: RunEventRecord | Any) -> LogRecord:
        return cls(event.id, event.run_id, event.task_id, event.kind, event.message, event.created_at,
                   level_of(event.kind, event.message))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> LogRecord:
        event_id, run_id, task_id, kind, message, created_at = row
        return cls(event_id, run_id, task_id, kind, message, created_at, level_of(kind, message))


def level_of(kind: str, message: str) -> Level:
    """How serious a line is.

    ``error``: a run or task that ``failed`` / ``upstream_failed``, a ``failed: …`` log line;
    ``warning``: a retry (``attempt 1/3 failed: …; retrying in 2s``) and ``cancelled`` (the user's
    doing, not a fault); ``info``: everything else (running, succeeded, skipped, conditions).
    Kinds named ``error`` / ``warning`` map to themselves.
    """
    if kind in ("error", "warning"):
        return kind  # type: ignore[return-value]
    text = message.strip()
    if kind in ("run_state", "task_state"):
        state = text.split(maxsplit=1)[0] if text else ""
        if state in _ERROR_STATES:
            return "error"
        if state in _WARNING_STATES:
            return "warning"
        return "info"
    if text.startswith("failed:") or text == "failed":
        return "error"
    if _RETRY.match(text) or text.startswith(("cancelled", "warning:")):
        return "warning"
    return "info"


def format_timestamp(created_at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(created_at))


def format_line(record: LogRecord | RunEventRecord, *, timestamps: bool = True, show_run: bool = False) -> str:
    """``HH:MM:SS [run] task: kind: message`` (what ``smoltui logs`` prints, run id only if asked).

    A line without a task is the run's own (``run``). Ids and the message are escaped
    (:func:`printable`): they come from workflow files and tools' output.
    """
    body = f"{printable(record.task_id or 'run')}: {record.kind}: {printable(record.message, multiline=True)}"
    if show_run:
        body = f"[{printable(record.run_id)}] {body}"
    if timestamps:
        body = f"{format_timestamp(record.created_at)} {body}"
    return body


class RunLogTail:
    """New log records from the store since the last :meth:`poll`.

    ``poll()`` (all runs, including ones created later) is one query per call: the first call
    returns the last ``backfill`` records of the store, later calls what was added since. Asking
    for given runs (``poll(["run-a"])``) keeps a cursor per run, backfilling each run the first time.
    A record is returned once, whichever way it was asked for. :meth:`history` fetches the older
    lines the backfill left out.
    """

    def __init__(self, run_store: RunStore, *, backfill: int = DEFAULT_BACKFILL,
                 batch: int = DEFAULT_BATCH) -> None:
        self.run_store = run_store
        self.backfill = backfill
        self.batch = batch
        self._cursor: int | None = None  # highest id returned by an all-runs poll
        self._window_start: int | None = None  # all-runs polls returned every record from here on
        self._run_cursors: dict[str, int] = {}

    @property
    def window_start(self) -> int | None:
        """The lowest id from which every record has been returned by all-runs polls (None: none yet)."""
        return self._window_start

    async def poll(self, run_ids: Iterable[str] | None = None) -> list[LogRecord]:
        """Records added since the last poll, oldest first: of every run (``None``) or of the given runs."""
        if run_ids is None:
            return await self._poll_all()
        records: list[LogRecord] = []
        for run_id in dict.fromkeys(run_ids):
            records.extend(await self._poll_run(run_id))
        records.sort(key=_record_id)
        return records

    async def history(self, run_id: str, *, before_id: int | None = None, limit: int | None = None) -> list[LogRecord]:
        """Up to ``limit`` (default ``backfill``) of a run's records with ``id < before_id``, the newest
        of them, oldest first (``before_id`` defaults to :attr:`window_start`; None there: nothing)."""
        before = self._window_start if before_id is None else before_id
        if before is None:
            return []
        limit = self.backfill if limit is None else limit
        rows = await self.run_store.store.fetch(
            f"SELECT {_COLUMNS} FROM run_events WHERE run_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (run_id, before, limit),
        )
        return [LogRecord.from_row(row) for row in reversed(rows)]

    # -- internals -------------------------------------------------------------------------------

    async def _poll_all(self) -> list[LogRecord]:
        fetch = self.run_store.store.fetch
        if self._cursor is None:
            rows = await fetch(f"SELECT {_COLUMNS} FROM run_events ORDER BY id DESC LIMIT ?", (self.backfill,))
            rows.reverse()
            if rows:
                self._window_start = rows[0][0]
                self._cursor = rows[-1][0]
            else:
                top = (await fetch("SELECT COALESCE(MAX(id), 0) FROM run_events"))[0][0]
                self._cursor = int(top)
                self._window_start = self._cursor + 1
        else:
            rows = []
            while True:  # one query unless more than `batch` records arrived since the last poll
                chunk = await fetch(
                    f"SELECT {_COLUMNS} FROM run_events WHERE id > ? ORDER BY id LIMIT ?", (self._cursor, self.batch)
                )
                rows.extend(chunk)
                if chunk:
                    self._cursor = chunk[-1][0]
                if len(chunk) < self.batch:
                    break
        records = [LogRecord.from_row(row) for row in rows]
        if self._run_cursors:  # already returned to a per-run poll
            records = [r for r in records if r.id > self._run_cursors.get(r.run_id, 0)]
        return records

    async def _poll_run(self, run_id: str) -> list[LogRecord]:
        cursor = self._run_cursors.get(run_id)
        if self._cursor is not None:
            cursor = self._cursor if cursor is None else max(cursor, self._cursor)
        fetch = self.run_store.store.fetch
        if cursor is None:
            rows = await fetch(
                f"SELECT {_COLUMNS} FROM run_events WHERE run_id = ? ORDER BY id DESC LIMIT ?", (run_id, self.backfill)
            )
            rows.reverse()
        else:
            rows = await fetch(
                f"SELECT {_COLUMNS} FROM run_events WHERE run_id = ? AND id > ? ORDER BY id", (run_id, cursor)
            )
        if rows:
            self._run_cursors[run_id] = rows[-1][0]
        elif cursor is not None:
            self._run_cursors[run_id] = cursor
        else:
            self._run_cursors[run_id] = 0
        return [LogRecord.from_row(row) for row in rows]


def _record_id(record: LogRecord) -> int:
    return record.id


__all__ = [
    "DEFAULT_BACKFILL",
    "LEVELS",
    "LEVEL_RANK",
    "Level",
    "LogRecord",
    "RunLogTail",
    "format_line",
    "format_timestamp",
    "level_of",
]
