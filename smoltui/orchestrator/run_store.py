"""Durable workflow runs: run and task states, outputs and log lines, in the SQLite store.

Tables ``runs``, ``task_runs`` and ``run_events`` come from migration 3 of :mod:`store`. Methods are
coroutines on the store's connection, each one transaction; artifact files are written and read
in a worker thread.

Outputs are stored as JSON. A value JSON cannot hold (a pandas DataFrame, ``bytes``, a ``Path``, or
anything nested inside a list/dict) is written as a file under ``<data_dir>/runs/<run_id>/artifacts/``
and the JSON holds a reference ``{"$artifact": kind, "path": ...}``; :meth:`RunStore.task_outputs`
turns the references back into values (DataFrame via parquet, bytes, Path). A value of no known kind
is stored as its ``repr`` under ``{"$artifact": "repr", "text": ...}`` and comes back as that text.

One driver per run: whoever drives a run holds its row in ``run_leases`` (migration 7), claimed in
one transaction (:meth:`RunStore.claim`), kept fresh by a heartbeat and deleted at the end. A claim
of a run whose lease a live process holds fails with :class:`RunBusy`, naming that process; a lease
whose owner died (same host and its pid gone, or no heartbeat for :data:`STALE_AFTER_S`) is taken
over. While this process drives a run, every write about it first checks, in the same transaction,
that the lease is still this process's: a driver that lost its lease (it looked dead and another
process took the run over) gets :class:`LeaseLost` instead of writing over the new driver's work.

A pending or running run whose driver is gone is ``interrupted`` (:func:`run_state_now`); the read
methods show its unfinished tasks as ``interrupted`` too, stopped at the driver's last heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smoltui.errors import SmoltuiError, StoreError
from smoltui.orchestrator.states import STORED_RUN_STATES, STORED_TASK_STATES, RunState, TaskState
from smoltui.orchestrator.store import Store

ARTIFACT_KEY = "$artifact"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

HEARTBEAT_S = 2.0
"""How often a driver renews its lease."""
STALE_AFTER_S = 15.0
"""A lease not renewed for this long is dead even if its pid exists (another host's process, or a
pid reused by something else). Several missed heartbeats, not one: a busy machine can hold an
event loop up for seconds, and taking over a live driver costs it its run."""
HOST = socket.gethostname()
_HELD_TOKENS: set[str] = set()
"""The lease tokens this process holds: a lease naming this pid with another token is a dead
process's that had the same pid (a restarted container), not ours."""


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


@dataclass(frozen=True)
class Lease:
    """Who drives a run: ``token`` tells this claim from any other by the same process."""

    run_id: str
    token: str
    pid: int
    host: str
    heartbeat: float
    acquired_at: float

    @property
    def owner(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def alive(self, now: float | None = None) -> bool:
        """Its owner still drives the run, as far as anyone can tell from here."""
        if self.host == HOST:
            if self.pid == os.getpid():
                if self.token not in _HELD_TOKENS:
                    return False
            elif not pid_alive(self.pid):
                return False
        return (time.time() if now is None else now) - self.heartbeat < STALE_AFTER_S


class RunBusy(SmoltuiError):
    """The run is being driven by another live process (or another claim in this one)."""

    def __init__(self, run_id: str, owner: str) -> None:
        super().__init__(f"run {run_id} is being driven by {owner}; wait for it to end, or stop it "
                         "there (Ctrl+C) and resume it afterwards")
        self.run_id = run_id
        self.owner = owner


class RunInUse(RunBusy):
    """A run cannot be deleted: a live process drives it."""

    def __init__(self, run_id: str, owner: str) -> None:
        super().__init__(run_id, owner)
        SmoltuiError.__init__(self, f"run {run_id} is being driven by {owner}; cancel it (or let it end) "
                                    "before deleting it")


class LeaseLost(SmoltuiError):
    """This process's lease on a run is gone: another process took the run over."""


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
    lease: Lease | None = None
    """Who drives it now (None: nobody claimed it, or the last driver let go)."""


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
_LEASE_COLUMNS = "run_id, token, pid, host, heartbeat, acquired_at"
_RUN_SELECT = (
    "SELECT " + ", ".join(f"r.{c}" for c in _RUN_COLUMNS.split(", ")) + ", "
    + ", ".join(f"l.{c}" for c in _LEASE_COLUMNS.split(", "))
    + " FROM runs r LEFT JOIN run_leases l ON l.run_id = r.id"
)
_TASK_COLUMNS = "run_id, task_id, state, attempt, outputs, error, started_at, finished_at, rendered"


class RunStore:
    """Run state on top of a :class:`Store` (shares its connection and lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs_dir = Path(store.path).parent / "runs"
        self._driving: dict[str, str] = {}  # run id -> this process's lease token: its writes are fenced

    # -- leases: one driver per run --------------------------------------------------------------

    async def claim(self, run_id: str) -> Lease:
        """Become the run's driver, or raise :class:`RunBusy` naming the live one.

        One transaction (the store takes SQLite's write lock up front), so of two processes
        claiming at once exactly one wins; the other sees the winner's fresh lease.
        """
        token = uuid.uuid4().hex
        me = os.getpid()

        def claim(conn: sqlite3.Connection) -> Lease:
            now = time.time()
            row = conn.execute(f"SELECT {_LEASE_COLUMNS} FROM run_leases WHERE run_id = ?", (run_id,)).fetchone()
            if row is not None:
                current = Lease(*row)
                if current.alive(now):
                    raise RunBusy(run_id, current.owner)
                conn.execute("UPDATE run_leases SET token = ?, pid = ?, host = ?, heartbeat = ?, acquired_at = ?"
                             " WHERE run_id = ?", (token, me, HOST, now, now, run_id))
            else:
                # A run stored as active by a process that took no lease (an older smoltui) is
                # still that process's while it lives.
                old = conn.execute("SELECT state, pid FROM runs WHERE id = ?", (run_id,)).fetchone()
                if old is not None and RunState(old[0]).active and old[1] and old[1] != me and pid_alive(old[1]):
                    raise RunBusy(run_id, f"pid {old[1]} on {HOST}")
                conn.execute(f"INSERT INTO run_leases ({_LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                             (run_id, token, me, HOST, now, now))
            _HELD_TOKENS.add(token)  # before the commit: nothing else runs on this thread meanwhile
            return Lease(run_id, token, me, HOST, now, now)

        try:
            lease = await self.store.write(claim)
        except BaseException:
            _HELD_TOKENS.discard(token)
            raise
        self._driving[run_id] = token
        return lease

    async def heartbeat(self, lease: Lease) -> bool:
        """Renew the lease; False when it is no longer ours (another process took the run over)."""
        def renew(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE run_leases SET heartbeat = ? WHERE run_id = ? AND token = ?",
                                (time.time(), lease.run_id, lease.token)).rowcount == 1

        return await self.store.write(renew)

    async def release(self, lease: Lease) -> None:
        """Stop driving the run (only this lease is deleted: a successor's stays)."""
        try:
            await self.store.write(lambda conn: conn.execute(
                "DELETE FROM run_leases WHERE run_id = ? AND token = ?", (lease.run_id, lease.token)))
        finally:
            _HELD_TOKENS.discard(lease.token)
            if self._driving.get(lease.run_id) == lease.token:
                del self._driving[lease.run_id]

    async def driver(self, run_id: str) -> Lease | None:
        """The live lease on the run, if someone drives it now."""
        row = await self.store.fetch_one(f"SELECT {_LEASE_COLUMNS} FROM run_leases WHERE run_id = ?", (run_id,))
        lease = Lease(*row) if row is not None else None
        return lease if lease is not None and lease.alive() else None

    def _fence(self, conn: sqlite3.Connection, run_id: str) -> None:
        """Inside a write about ``run_id``: refuse it if this process drove the run and lost it."""
        token = self._driving.get(run_id)
        if token is None:
            return
        row = conn.execute("SELECT token, pid, host FROM run_leases WHERE run_id = ?", (run_id,)).fetchone()
        if row is None or row[0] != token:
            who = f"pid {row[1]} on {row[2]}" if row is not None else "nobody"
            raise LeaseLost(f"run {run_id} was taken over by {who}; this process stopped driving it")

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
            self._fence(conn, run_id)
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
        row = await self.store.fetch_one(f"{_RUN_SELECT} WHERE r.id = ?", (run_id,))
        if row is None:
            raise StoreError(f"no workflow run {run_id}")
        return await _run(row)

    async def find_run(self, run_id: str) -> RunRecord | None:
        try:
            return await self.get_run(run_id)
        except StoreError:
            return None

    async def list_runs(self, limit: int | None = None, *, active: bool = False) -> list[RunRecord]:
        """All runs (``active``: only those stored as pending or running), newest first."""
        where = " WHERE r.state IN ('pending', 'running')" if active else ""
        sql = f"{_RUN_SELECT}{where} ORDER BY r.created_at DESC, r.rowid DESC"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [await _run(row) for row in await self.store.fetch(sql, params)]

    async def delete_run(self, run_id: str) -> RunRecord:
        """Delete a run that nothing drives: its row, its tasks and log lines (they cascade), and
        its folder under the runs dir (artifacts). Refused with :class:`RunBusy` while a live
        process drives it (this one included): cancel it first. Returns what was deleted.

        The approvals its tasks asked for stay in the audit log: that is a record of what people
        allowed, not a part of the run.
        """
        def delete(conn: sqlite3.Connection) -> RunRecord:
            row = conn.execute(f"{_RUN_SELECT} WHERE r.id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"no workflow run {run_id}")
            raw = json.loads(row[4]) if row[4] else {}
            record = RunRecord(row[0], row[1], row[2], row[3], raw, row[5], row[6], row[7], row[8], _lease(row[9:]))
            if run_id in self._driving or run_state_now(record).active:
                owner = record.lease.owner if record.lease is not None else f"pid {record.pid} on {HOST}"
                raise RunInUse(run_id, owner)
            conn.execute("DELETE FROM run_leases WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM run_events WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM task_runs WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            return record

        record = await self.store.write(delete)
        folder = self.runs_dir / run_id
        # Only ever a folder right under the runs dir (a run id is a name, never a path).
        if folder.resolve().parent == self.runs_dir.resolve() and folder.is_dir():
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        return record

    async def prune_runs(self, older_than_s: float) -> tuple[list[str], list[str]]:
        """Delete every run that ended more than ``older_than_s`` seconds ago (by its last change),
        with its artifacts. Returns (deleted ids, ids skipped because something drives them)."""
        cutoff = time.time() - older_than_s
        rows = await self.store.fetch("SELECT id FROM runs WHERE updated_at < ? ORDER BY created_at", (cutoff,))
        deleted: list[str] = []
        busy: list[str] = []
        for (run_id,) in rows:
            try:
                await self.delete_run(run_id)
            except RunInUse:
                busy.append(run_id)
            except StoreError:  # deleted meanwhile by someone else
                continue
            else:
                deleted.append(run_id)
        return deleted, busy

    async def set_run_state(self, run_id: str, state: str, *, log: bool = False) -> None:
        """The run's state (and this process as its driver); ``log`` also appends the change to
        the run's log lines, which is what ``smoltui logs`` and every other viewer tail."""
        _check(state, STORED_RUN_STATES, "run")
        now = time.time()
        def update(conn: sqlite3.Connection) -> None:
            self._fence(conn, run_id)
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

        def update(conn: sqlite3.Connection) -> None:
            self._fence(conn, run_id)
            conn.execute("UPDATE runs SET variables = ?, updated_at = ? WHERE id = ?", (encoded, time.time(), run_id))

        await self.store.write(update)

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
        _check(state, STORED_TASK_STATES, "task")
        outputs_json = None
        if outputs:
            outputs_json = await asyncio.to_thread(self._encode, run_id, task_id, outputs)
        elif outputs is not None:
            outputs_json = "{}"
        now = time.time()
        started = now if state == TaskState.RUNNING else None
        finished = now if TaskState(state).finished else None
        def upsert(conn: sqlite3.Connection) -> int | None:
            self._fence(conn, run_id)
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
        """The run's tasks as they stand now (see :meth:`task_states`)."""
        rows = await self.store.fetch(
            f"SELECT {_TASK_COLUMNS} FROM task_runs WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        records = {row[1]: TaskRecord(row[0], row[1], row[2], row[3],
                                      json.loads(row[4]) if row[4] else None, row[5], row[6], row[7],
                                      json.loads(row[8]) if row[8] else None)
                   for row in rows}
        stopped = await self._stopped_at(run_id) if any(
            not TaskState(r.state).finished for r in records.values()) else None
        if stopped is None:
            return records
        return {task_id: _interrupted(record, stopped) if not TaskState(record.state).finished else record
                for task_id, record in records.items()}

    async def set_task_rendered(self, run_id: str, task_id: str, rendered: dict[str, Any]) -> None:
        """Keep what an attempt ran with (shown by the run view); values JSON cannot hold become
        their (shortened) repr: this is for reading, never fed back into a run."""
        text = json.dumps(rendered, ensure_ascii=False, default=_display_repr)

        def update(conn: sqlite3.Connection) -> None:
            self._fence(conn, run_id)
            conn.execute("UPDATE task_runs SET rendered = ? WHERE run_id = ? AND task_id = ?", (text, run_id, task_id))

        await self.store.write(update)

    async def set_task_stats(self, run_id: str, task_id: str, stats: dict[str, Any]) -> None:
        """Keep what an attempt measured (an LLM task's tokens, tok/s, seconds) beside what it ran
        with: ``rendered["stats"]``, replaced with the next attempt's ``rendered``."""
        text = json.dumps(stats, ensure_ascii=False, default=str)

        def update(conn: sqlite3.Connection) -> None:
            self._fence(conn, run_id)
            conn.execute("UPDATE task_runs SET rendered = json_set(COALESCE(rendered, '{}'), '$.stats', json(?))"
                         " WHERE run_id = ? AND task_id = ?", (text, run_id, task_id))

        await self.store.write(update)

    async def task_states(self, run_id: str) -> dict[str, str]:
        """task id -> state, as it stands now: the pending and running tasks of an interrupted run
        (its driver died) are ``interrupted``, since nothing runs them any more."""
        rows = await self.store.fetch("SELECT task_id, state FROM task_runs WHERE run_id = ? ORDER BY rowid", (run_id,))
        states = {task_id: state for task_id, state in rows}
        if any(not TaskState(state).finished for state in states.values()) and await self._stopped_at(run_id):
            return {task_id: state if TaskState(state).finished else TaskState.INTERRUPTED
                    for task_id, state in states.items()}
        return states

    async def _stopped_at(self, run_id: str) -> float | None:
        """When an interrupted run's driver was last seen alive; None if the run is not interrupted."""
        row = await self.store.fetch_one(
            f"SELECT r.state, r.pid, r.updated_at, {', '.join(f'l.{c}' for c in _LEASE_COLUMNS.split(', '))}"
            " FROM runs r LEFT JOIN run_leases l ON l.run_id = r.id WHERE r.id = ?", (run_id,))
        if row is None:
            return None
        state, pid, updated_at, *lease = row
        record = RunRecord(run_id, "", "", None, {}, state, updated_at, updated_at, pid, _lease(lease))
        if run_state_now(record) is not RunState.INTERRUPTED:
            return None
        return max(updated_at, record.lease.heartbeat) if record.lease is not None else updated_at

    async def task_outputs(self, run_id: str, task_id: str) -> dict[str, Any]:
        """A task's outputs with artifact references loaded back into values."""
        row = await self.store.fetch_one("SELECT outputs FROM task_runs WHERE run_id = ? AND task_id = ?",
                                         (run_id, task_id))
        if row is None or not row[0]:
            return {}
        return await asyncio.to_thread(_decode, json.loads(row[0]))

    # -- log lines -------------------------------------------------------------------------------

    async def add_event(self, run_id: str, kind: str, message: str, task_id: str | None = None) -> int:
        def add(conn: sqlite3.Connection) -> int | None:
            self._fence(conn, run_id)
            return conn.execute(
                "INSERT INTO run_events (run_id, task_id, kind, message, created_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, task_id, kind, message, time.time()),
            ).lastrowid

        event_id = await self.store.write(add)
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
    return RunRecord(row[0], row[1], row[2], row[3], variables, row[5], row[6], row[7], row[8], _lease(row[9:]))


def _lease(columns: Any) -> Lease | None:
    return Lease(*columns) if columns and columns[0] is not None else None


def run_state_now(record: RunRecord) -> RunState:
    """The run's state, except that a pending/running run whose driver is gone is ``interrupted``:
    its lease's owner died (or stopped renewing it), or, for a run that took no lease, its pid."""
    state = RunState(record.state)
    if not state.active:
        return state
    if record.lease is not None:
        return state if record.lease.alive() else RunState.INTERRUPTED
    if record.pid and not pid_alive(record.pid):
        return RunState.INTERRUPTED
    return state


def _interrupted(record: TaskRecord, stopped: float) -> TaskRecord:
    """An unfinished task of an interrupted run: over when its driver was last seen (its clock stops)."""
    finished = max(stopped, record.started_at) if record.started_at is not None else None
    return replace(record, state=TaskState.INTERRUPTED, finished_at=finished)


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
