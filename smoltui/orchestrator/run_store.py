"""Durable workflow runs: run and task states, outputs and log lines, in the SQLite store.

Tables ``runs``, ``task_runs`` and ``run_events`` come from migration 3 of :mod:`store`. Methods are
coroutines on the store's connection, each one transaction; artifact files are written and read
in a worker thread.

Outputs are stored as JSON. A value JSON cannot hold (a pandas DataFrame, ``bytes``, a ``Path``, or
anything nested inside a list/dict) is written as a file under ``<data_dir>/runs/<run_id>/artifacts/``
and the JSON holds a reference ``{"$artifact": kind, "path": ...}``; :meth:`RunStore.task_outputs`
turns the references back into values (DataFrame via parquet, bytes, Path). A value of no known kind
is stored as its ``repr`` under ``{"$artifact": "repr", "text": ...}`` and comes back as that text.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoltui.errors import StoreError
from smoltui.orchestrator.states import STORED_RUN_STATES, TASK_STATES, TaskState
from smoltui.orchestrator.store import Store

ARTIFACT_KEY = "$artifact"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RunRecord:
    id: str
    workflow_id: str
    name: str
    file: str | None
    variables: dict[str, Any]
    state: str
    created_at: float
    updated_at: float
    pid: int | None


@dataclass(frozen=True)
class TaskRecord:
    run_id: str
    task_id: str
    state: str
    attempt: int
    outputs: dict[str, Any] | None  # raw JSON (artifact references not resolved)
    error: str | None
    started_at: float | None
    finished_at: float | None
    rendered: dict[str, Any] | None = None  # inputs/prompt/system of the last attempt, for display


@dataclass(frozen=True)
class RunEventRecord:
    id: int
    run_id: str
    task_id: str | None
    kind: str
    message: str
    created_at: float


_RUN_COLUMNS = "id, workflow_id, name, file, variables, state, created_at, updated_at, pid"
_TASK_COLUMNS = "run_id, task_id, state, attempt, outputs, error, started_at, finished_at, rendered"


class RunStore:
    """Run state on top of a :class:`Store` (shares its connection and lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs_dir = Path(store.path).parent / "runs"

    # -- runs ------------------------------------------------------------------------------------

    def artifacts_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id / "artifacts"

    async def create_run(
        self,
        workflow_id: str,
        *,
        name: str = "",
        file: str | None = None,
        variables: dict[str, Any] | None = None,
        run_id: str | None = None,
        task_ids: list[str] | tuple[str, ...] = (),
    ) -> RunRecord:
        """A new ``pending`` run (with a ``pending`` row per task id)."""
        run_id = run_id or new_run_id()
        now = time.time()
        variables_json = await asyncio.to_thread(self._encode, run_id, "variables", dict(variables or {}))
        def create(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (run_id, workflow_id, name, file, variables_json, now, now, os.getpid()),
            )
            conn.executemany(
                "INSERT INTO task_runs (run_id, task_id, state) VALUES (?, ?, 'pending')",
                [(run_id, task_id) for task_id in task_ids],
            )

        await self.store.write(create)
        return await self.get_run(run_id)

    async def get_run(self, run_id: str) -> RunRecord:
        row = await self.store.fetch_one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise StoreError(f"no workflow run {run_id}")
        return await _run(row)

    async def find_run(self, run_id: str) -> RunRecord | None:
        try:
            return await self.get_run(run_id)
        except StoreError:
            return None

    async def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """All runs, newest first."""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC, rowid DESC"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [await _run(row) for row in await self.store.fetch(sql, params)]

    async def set_run_state(self, run_id: str, state: str, *, log: bool = False) -> None:
        """The run's state (and this process as its driver); ``log`` also appends the change to
        the run's log lines, which is what ``smoltui logs`` and every other viewer tail."""
        _check(state, STORED_RUN_STATES, "run")
        now = time.time()
        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE runs SET state = ?, updated_at = ?, pid = ? WHERE id = ?", (state, now, os.getpid(), run_id)
            )
            if cur.rowcount == 0:
                raise StoreError(f"no workflow run {run_id}")
            if log:
                conn.execute(
                    "INSERT INTO run_events (run_id, task_id, kind, message, created_at) VALUES (?, NULL, 'run_state', ?, ?)",
                    (run_id, state, now),
                )

        await self.store.write(update)

    async def set_run_variables(self, run_id: str, variables: dict[str, Any]) -> None:
        """What a resumed run now runs with (its stored variables plus that resume's overrides)."""
        encoded = await asyncio.to_thread(self._encode, run_id, "variables", dict(variables))
        await self.store.write(lambda conn: conn.execute(
            "UPDATE runs SET variables = ?, updated_at = ? WHERE id = ?", (encoded, time.time(), run_id)))

    # -- tasks -----------------------------------------------------------------------------------

    async def set_task_state(
        self,
        run_id: str,
        task_id: str,
        state: str,
        *,
        attempt: int | None = None,
        outputs: dict[str, Any] | None = None,
        error: str | None = None,
        log: bool = False,
    ) -> int | None:
        """Upsert a task's state; ``outputs`` (values of any kind) are stored, artifacts as files.

        ``running`` stamps ``started_at``; the end states stamp ``finished_at``. ``error`` and
        ``outputs`` are replaced by what is given (None clears them). ``log`` also appends the
        change to the run's log lines, in the same transaction; returns that line's id.
        """
        _check(state, TASK_STATES, "task")
        outputs_json = None
        if outputs:
            outputs_json = await asyncio.to_thread(self._encode, run_id, task_id, outputs)
        elif outputs is not None:
            outputs_json = "{}"
        now = time.time()
        started = now if state == TaskState.RUNNING else None
        finished = now if TaskState(state).finished else None
        def upsert(conn: sqlite3.Connection) -> int | None:
            conn.execute(
                """
                INSERT INTO task_runs (run_id, task_id, state, attempt, outputs, error, started_at, finished_at)
                VALUES (?, ?, ?, COALESCE(?, 0), ?, ?, ?, ?)
                ON CONFLICT (run_id, task_id) DO UPDATE SET
                    state = excluded.state,
                    attempt = COALESCE(?, task_runs.attempt),
                    outputs = excluded.outputs,
                    error = excluded.error,
                    started_at = COALESCE(excluded.started_at, task_runs.started_at),
                    finished_at = excluded.finished_at
                """,
                (run_id, task_id, state, attempt, outputs_json, error, started, finished, attempt),
            )
            conn.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (now, run_id))
            if not log:
                return None
            return conn.execute(
                "INSERT INTO run_events (run_id, task_id, kind, message, created_at) VALUES (?, ?, 'task_state', ?, ?)",
                (run_id, task_id, state, now),
            ).lastrowid

        return await self.store.write(upsert)

    async def task_records(self, run_id: str) -> dict[str, TaskRecord]:
        rows = await self.store.fetch(
            f"SELECT {_TASK_COLUMNS} FROM task_runs WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        return {row[1]: TaskRecord(row[0], row[1], row[2], row[3],
                                   json.loads(row[4]) if row[4] else None, row[5], row[6], row[7],
                                   json.loads(row[8]) if row[8] else None)
                for row in rows}

    async def set_task_rendered(self, run_id: str, task_id: str, rendered: dict[str, Any]) -> None:
        """Keep what an attempt ran with (shown by the run view); values JSON cannot hold become
        their (shortened) repr: this is for reading, never fed back into a run."""
        text = json.dumps(rendered, ensure_ascii=False, default=_display_repr)
        await self.store.write(lambda conn: conn.execute(
            "UPDATE task_runs SET rendered = ? WHERE run_id = ? AND task_id = ?", (text, run_id, task_id)))

    async def task_states(self, run_id: str) -> dict[str, str]:
        """task id -> state."""
        rows = await self.store.fetch("SELECT task_id, state FROM task_runs WHERE run_id = ? ORDER BY rowid", (run_id,))
        return {task_id: state for task_id, state in rows}

    async def task_outputs(self, run_id: str, task_id: str) -> dict[str, Any]:
        """A task's outputs with artifact references loaded back into values."""
        row = await self.store.fetch_one("SELECT outputs FROM task_runs WHERE run_id = ? AND task_id = ?",
                                         (run_id, task_id))
        if row is None or not row[0]:
            return {}
        return await asyncio.to_thread(_decode, json.loads(row[0]))

    # -- log lines -------------------------------------------------------------------------------

    async def add_event(self, run_id: str, kind: str, message: str, task_id: str | None = None) -> int:
        event_id = await self.store.write(lambda conn: conn.execute(
            "INSERT INTO run_events (run_id, task_id, kind, message, created_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, task_id, kind, message, time.time()),
        ).lastrowid)
        assert event_id is not None
        return event_id

    async def events(self, run_id: str, after_id: int = 0) -> list[RunEventRecord]:
        """A run's log lines with ``id > after_id``, oldest first (poll with the last id to follow)."""
        rows = await self.store.fetch(
            "SELECT id, run_id, task_id, kind, message, created_at FROM run_events"
            " WHERE run_id = ? AND id > ? ORDER BY id",
            (run_id, after_id),
        )
        return [RunEventRecord(*row) for row in rows]

    # -- artifacts -------------------------------------------------------------------------------

    def _encode(self, run_id: str, owner: str, value: dict[str, Any]) -> str:
        folder = self.artifacts_dir(run_id)

        def encode(item: Any, name: str) -> Any:
            if item is None or isinstance(item, bool | int | str):
                return item
            if isinstance(item, float):
                return item if math.isfinite(item) else _artifact_repr(item)
            if isinstance(item, dict) and all(isinstance(k, str) for k in item):
                if ARTIFACT_KEY in item:  # would be mistaken for a reference on the way back
                    return _artifact_repr(item)
                return {k: encode(v, f"{name}.{k}") for k, v in item.items()}
            if isinstance(item, list | tuple):
                return [encode(v, f"{name}.{i}") for i, v in enumerate(item)]
            stem = _SAFE_NAME.sub("_", f"{owner}.{name}")[:120]
            return _write_artifact(folder, f"{stem}-{uuid.uuid4().hex[:8]}", item)

        encoded = {k: encode(v, k) for k, v in value.items()}
        return json.dumps(encoded, ensure_ascii=False)


def _display_repr(value: Any) -> str:
    if _is_dataframe(value):
        return f"<table {value.shape[0]} rows × {value.shape[1]} columns>\n{value.head(10).to_string()}"
    text = str(value) if isinstance(value, Path) else repr(value)
    return text if len(text) <= 4000 else text[:4000] + f"… ({len(text) - 4000} more characters)"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _check(state: str, allowed: tuple[str, ...], what: str) -> None:
    if state not in allowed:
        raise ValueError(f"unknown {what} state {state!r} (one of {', '.join(allowed)})")


async def _run(row: tuple[Any, ...]) -> RunRecord:
    raw = json.loads(row[4]) if row[4] else {}
    # Variables are plain JSON unless a run was started with a table or a file (then: artifacts).
    variables = await asyncio.to_thread(_decode, raw) if _has_artifacts(raw) else raw
    return RunRecord(row[0], row[1], row[2], row[3], variables, row[5], row[6], row[7], row[8])


def _has_artifacts(value: Any) -> bool:
    if isinstance(value, dict):
        return ARTIFACT_KEY in value or any(_has_artifacts(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_artifacts(v) for v in value)
    return False


def _is_dataframe(value: Any) -> bool:
    module = type(value).__module__
    return (module == "pandas" or module.startswith("pandas.")) and type(value).__name__ == "DataFrame"


def _artifact_repr(value: Any) -> dict[str, Any]:
    return {ARTIFACT_KEY: "repr", "text": repr(value)}


def _write_artifact(folder: Path, stem: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Path):
        # A file the task produced: keep a reference (copying it would double large outputs).
        return {ARTIFACT_KEY: "path", "path": str(value)}
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(value, bytes | bytearray | memoryview):
        path = folder / f"{stem}.bin"
        path.write_bytes(bytes(value))
        return {ARTIFACT_KEY: "bytes", "path": str(path)}
    if _is_dataframe(value):
        path = folder / f"{stem}.parquet"
        try:
            value.to_parquet(path)
            return {ARTIFACT_KEY: "dataframe", "path": str(path), "format": "parquet"}
        except (ImportError, ValueError, TypeError):
            path = folder / f"{stem}.pkl"
            value.to_pickle(path)
            return {ARTIFACT_KEY: "dataframe", "path": str(path), "format": "pickle"}
    return _artifact_repr(value)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get(ARTIFACT_KEY)
        if kind is None:
            return {k: _decode(v) for k, v in value.items()}
        return _load_artifact(kind, value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _load_artifact(kind: str, ref: dict[str, Any]) -> Any:
    if kind == "repr":
        return ref.get("text", "")
    path = Path(ref["path"])
    if kind == "path":
        return path
    try:
        if kind == "bytes":
            return path.read_bytes()
        if kind == "dataframe":
            import pandas as pd

            return pd.read_parquet(path) if ref.get("format") == "parquet" else pd.read_pickle(path)  # noqa: S301 - our own file
    except (OSError, ImportError) as error:
        raise StoreError(f"cannot load the artifact {path}: {error}") from error
    raise StoreError(f"unknown artifact kind {kind!r} in {path}")
