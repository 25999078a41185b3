"""The SQLite store: chat sessions, their messages and tool calls, with full-text search; the
audit trail and (through :mod:`run_store`) workflow runs share the file.

Async, through aiosqlite: one connection per process on its own thread, every method a coroutine,
so nothing on the event loop waits for the disk. A transaction is one job on that thread
(:meth:`Store.write`), so two coroutines' transactions never interleave and a cancelled caller
never leaves one open. WAL mode lets a reader (the TUI listing sessions, a ``smoltui logs`` in
another terminal) go on while a writer commits.

Schema changes are numbered migrations in ``MIGRATIONS`` (SQL scripts, and Python steps for data
that SQL cannot move); the applied number lives in ``PRAGMA user_version``. They run once, when
the file is opened, on a short-lived connection of their own.

Nothing is written to a file before it is known to be smoltui's and sound: at open, a read-only
look checks SQLite's header, ``PRAGMA application_id`` (:data:`APPLICATION_ID`; older smoltui files
are known by their tables) and ``PRAGMA quick_check``. :func:`inspect_file` (``smoltui db check``)
and :func:`backup` (``smoltui db backup``, SQLite's online backup API) work on the file the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from smoltui.errors import DatabaseRefused, StoreError

ROLES = ("system", "user", "assistant", "tool")

# Append only: a released migration is never edited, because databases in the wild already ran it.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE sessions (
            id          INTEGER PRIMARY KEY,
            title       TEXT    NOT NULL,
            model       TEXT,
            created_at  REAL    NOT NULL,
            updated_at  REAL    NOT NULL
        );
        CREATE INDEX sessions_updated ON sessions(updated_at);

        CREATE TABLE messages (
            id          INTEGER PRIMARY KEY,
            session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role        TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
            content     TEXT    NOT NULL,
            thinking    TEXT,
            stats       TEXT,
            created_at  REAL    NOT NULL
        );
        CREATE INDEX messages_session ON messages(session_id, id);

        -- External content: the text is stored once, in `messages`; the index only holds tokens.
        -- remove_diacritics 2 lets "cafe" find "café".
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, thinking,
            content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        );
        -- An external-content index must be told the old values to forget them, hence the
        -- 'delete' commands. Cascade deletes from `sessions` fire these triggers too.
        CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, content, thinking)
            VALUES (new.id, new.content, new.thinking);
        END;
        CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
            VALUES ('delete', old.id, old.content, old.thinking);
        END;
        CREATE TRIGGER messages_au AFTER UPDATE OF content, thinking ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
            VALUES ('delete', old.id, old.content, old.thinking);
            INSERT INTO messages_fts(rowid, content, thinking)
            VALUES (new.id, new.content, new.thinking);
        END;
        """,
    ),
    (
        2,
        """
        -- The audit trail of tool calls: one row per call, written when the decision is made and
        -- completed with the result. No foreign keys: the trail outlives deleted chats and runs.
        CREATE TABLE tool_calls (
            id                  INTEGER PRIMARY KEY,
            created_at          REAL    NOT NULL,
            session_id          INTEGER,
            run_id              TEXT,
            task_id             TEXT,
            call_id             TEXT,
            tool                TEXT    NOT NULL,
            arguments           TEXT    NOT NULL,
            original_arguments  TEXT,
            decision            TEXT    NOT NULL,
            decided_by          TEXT    NOT NULL,
            duration_s          REAL,
            ok                  INTEGER,
            error               TEXT,
            result_summary      TEXT
        );
        CREATE INDEX tool_calls_run ON tool_calls(run_id, id);
        CREATE INDEX tool_calls_session ON tool_calls(session_id, id);
        """,
    ),
    (
        3,
        """
        -- Workflow runs (see run_store.py): one row per run, one per task of a run, and the run's
        -- log lines. Outputs are JSON; non-JSON values are files in the run's folder, referenced
        -- as {"$artifact": kind, "path": ...}.
        CREATE TABLE runs (
            id           TEXT    PRIMARY KEY,
            workflow_id  TEXT    NOT NULL,
            name         TEXT    NOT NULL DEFAULT '',
            file         TEXT,
            variables    TEXT    NOT NULL DEFAULT '{}',
            state        TEXT    NOT NULL CHECK (state IN
                             ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
            created_at   REAL    NOT NULL,
            updated_at   REAL    NOT NULL,
            pid          INTEGER
        );
        CREATE INDEX runs_created ON runs(created_at);

        CREATE TABLE task_runs (
            run_id       TEXT    NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            task_id      TEXT    NOT NULL,
            state        TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'succeeded',
                             'failed', 'skipped', 'upstream_failed', 'cancelled')),
            attempt      INTEGER NOT NULL DEFAULT 0,
            outputs      TEXT,
            error        TEXT,
            started_at   REAL,
            finished_at  REAL,
            PRIMARY KEY (run_id, task_id)
        );

        CREATE TABLE run_events (
            id          INTEGER PRIMARY KEY,
            run_id      TEXT    NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            task_id     TEXT,
            kind        TEXT    NOT NULL,
            message     TEXT    NOT NULL,
            created_at  REAL    NOT NULL
        );
        CREATE INDEX run_events_run ON run_events(run_id, id);
        """,
    ),
    (
        4,
        """
        -- What a task's attempt actually ran with: its inputs, prompt and system text after ${...}
        -- was evaluated (JSON, for the run view; values JSON cannot hold are kept as their repr).
        ALTER TABLE task_runs ADD COLUMN rendered TEXT;
        """,
    ),
    (
        5,
        """
        -- The tools a chat may call (JSON list of names; NULL: none): switched on per chat.
        ALTER TABLE sessions ADD COLUMN tools TEXT;
        """,
    ),
]

def _backfill_tool_calls(conn: sqlite3.Connection) -> None:
    """Migration 6's data: the calls each stored reply made, read once from its markup, and the
    tool message that answered each (the next tool turns, in order)."""
    from smoltui.backends.call_markup import parse_markup, result_summary

    rows = conn.execute(
        "SELECT id, session_id, role, content FROM messages ORDER BY session_id, id"
    ).fetchall()
    waiting: list[tuple[int, str]] = []  # (message id, call id) still without a result, in order
    session = None
    for message_id, session_id, role, content in rows:
        if session_id != session:
            session, waiting = session_id, []
        if role == "assistant" and "<tool_call>" in content:
            _, calls = parse_markup(content)
            for position, call in enumerate(calls):
                call_id = f"m{message_id}.{position}"
                conn.execute(
                    f"INSERT INTO message_tool_calls ({_CALL_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL)",
                    (message_id, position, call_id, call.name, call.arguments, call.error),
                )
                waiting.append((message_id, call_id))
        elif role == "tool" and waiting:
            owner, call_id = waiting.pop(0)
            ok, summary, _ = result_summary(content)
            conn.execute(
                "UPDATE message_tool_calls SET ok = ?, summary = ?, result_message_id = ? WHERE message_id = ? AND call_id = ?",
                (int(ok), summary, message_id, owner, call_id),
            )
        elif role == "user":
            waiting = []


MIGRATIONS.append((
    6,
    """
    -- The tool calls each assistant turn made, as rows: the message keeps its markup (the next
    -- prompt must render the tokens the KV cache holds), these say what was called, with which
    -- arguments (the ones that ran, after an edit), how it ended, who decided, and which tool
    -- message holds its result.
    CREATE TABLE message_tool_calls (
        message_id         INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        position           INTEGER NOT NULL,
        call_id            TEXT    NOT NULL,
        name               TEXT    NOT NULL,
        arguments          TEXT    NOT NULL,
        error              TEXT,
        ok                 INTEGER,
        summary            TEXT,
        decision           TEXT,
        decided_by         TEXT,
        result_message_id  INTEGER REFERENCES messages(id) ON DELETE SET NULL,
        PRIMARY KEY (message_id, position)
    );
    CREATE INDEX message_tool_calls_call ON message_tool_calls(call_id);
    """,
))
MIGRATIONS.append((
    7,
    """
    -- Who drives a run now (see run_store.py): one row while a process drives it, claimed in one
    -- transaction, kept fresh by a heartbeat, deleted when the run ends. A row whose owner died
    -- (same host and its pid gone, or no heartbeat for a while) can be taken over. No foreign key:
    -- a new run's lease is claimed before its row is written.
    CREATE TABLE run_leases (
        run_id       TEXT    PRIMARY KEY,
        token        TEXT    NOT NULL,
        pid          INTEGER NOT NULL,
        host         TEXT    NOT NULL,
        heartbeat    REAL    NOT NULL,
        acquired_at  REAL    NOT NULL
    );
    """,
))

APPLICATION_ID = 0x736D6F6C  # "smol"
"""``PRAGMA application_id`` of every smoltui database: how an open tells smoltui's file from
another program's SQLite file at the same path."""

MIGRATIONS.append((
    8,
    f"""
    -- A reply is saved while it streams (at most a second behind), so a signal, a crash or kill -9
    -- keeps what was said. cut_off is 1 until the reply ends normally: a row that still says 1 was
    -- stopped (esc, a signal, an error) or its process died mid-reply.
    ALTER TABLE messages ADD COLUMN cut_off INTEGER NOT NULL DEFAULT 0;
    -- Marks the file as smoltui's (databases from before this migration are recognised by their
    -- tables and user_version).
    PRAGMA application_id = {APPLICATION_ID};
    """,
))
MIGRATION_STEPS: dict[int, Callable[[sqlite3.Connection], None]] = {6: _backfill_tool_calls}
"""Python that runs after a migration's SQL, in the same transaction."""

LATEST_VERSION = MIGRATIONS[-1][0]

# snippet() wraps each matched token in these; the UI turns them into highlights. Private-use
# characters, not brackets: a message's own "[1, 2]" must not read as a highlight.
HIGHLIGHT_OPEN = "\ue000"
HIGHLIGHT_CLOSE = "\ue001"


@dataclass(frozen=True)
class Session:
    id: int
    title: str
    model: str | None
    created_at: float
    updated_at: float
    message_count: int


@dataclass(frozen=True)
class StoredMessage:
    id: int
    session_id: int
    role: str
    content: str
    thinking: str | None
    stats: dict[str, Any] | None
    created_at: float
    cut_off: bool = False
    """An assistant reply that did not end normally (stopped, failed, or its process died): the
    text is what had been said by then."""


@dataclass(frozen=True)
class SearchHit:
    """One search result.

    ``snippet`` marks each matched term as ``[term]``. A hit on a session's title (rather than on
    a message) has ``message_id`` and ``role`` set to None and the whole title as its snippet.
    """

    session_id: int
    session_title: str
    message_id: int | None
    role: str | None
    snippet: str


@dataclass(frozen=True)
class MessageToolCall:
    """A tool call an assistant turn made, stored beside the turn's text.

    ``ok`` is None until the call has ended (or when the process died while it waited)."""

    message_id: int
    position: int
    call_id: str
    name: str
    arguments: str
    """As JSON text: what the model wrote, or, after an edit, what ran."""
    error: str | None = None
    """Why the call could not be read (it never ran)."""
    ok: bool | None = None
    summary: str | None = None
    decision: str | None = None
    decided_by: str | None = None
    result_message_id: int | None = None

    def __post_init__(self) -> None:
        if self.ok is not None and not isinstance(self.ok, bool):
            object.__setattr__(self, "ok", bool(self.ok))


@dataclass(frozen=True)
class StoredToolCall:
    """One row of the tool-call audit trail (arguments already redacted when written).

    ``ok``, ``error``, ``result_summary`` and ``duration_s`` stay None while an approved call is
    still running (or if the process died while it ran).
    """

    id: int
    created_at: float
    session_id: int | None
    run_id: str | None
    task_id: str | None
    call_id: str | None
    tool: str
    arguments: Any
    original_arguments: Any
    decision: str
    decided_by: str
    duration_s: float | None
    ok: bool | None
    error: str | None
    result_summary: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_SESSION_COLUMNS = """
    s.id, s.title, s.model, s.created_at, s.updated_at,
    (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id)
"""
_MESSAGE_COLUMNS = "id, session_id, role, content, thinking, stats, created_at, cut_off"
_CALL_INSERT_COLUMNS = ("message_id, position, call_id, name, arguments, error, ok, summary, decision, decided_by,"
                        " result_message_id")
_CALL_COLUMNS = ", ".join(f"c.{c.strip()}" for c in _CALL_INSERT_COLUMNS.split(","))
_TOOL_CALL_INSERT_COLUMNS = (
    "created_at, session_id, run_id, task_id, call_id, tool, arguments, original_arguments,"
    " decision, decided_by, duration_s, ok, error, result_summary"
)
_TOOL_CALL_COLUMNS = "id, " + _TOOL_CALL_INSERT_COLUMNS


_T = TypeVar("_T")


def _in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    # IMMEDIATE takes the write lock up front, so busy_timeout applies to the whole transaction
    # instead of failing half-way on a lock upgrade.
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _reading(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    return work(conn)


class _Batch:
    def __init__(self) -> None:
        self.statements: list[tuple[str, Sequence[Any]]] = []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.statements.append((sql, params))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.statements.extend((sql, row) for row in rows)

    def run(self, conn: sqlite3.Connection) -> None:
        for sql, params in self.statements:
            conn.execute(sql, params)


class Store:
    """Chat sessions, messages, their tool calls and the audit trail in one SQLite file."""

    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        # Use Store.open(); this only wires up an already-migrated connection.
        self.path = path
        self._conn = conn
        self._closed = False
        self.writing: set[int] = set()
        """Replies this process is still writing (saved as they stream, see ChatService): its
        front ends show them live, so a transcript read meanwhile leaves them out."""

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        The file is checked first, read-only (:func:`check_file`): one that is damaged, another
        program's, or not a database is refused with :class:`DatabaseRefused` and left as it was."""
        path = Path(path).expanduser()
        await asyncio.to_thread(_prepare, path)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is committed
            # behind our back.
            conn = await aiosqlite.connect(path, timeout=5.0, isolation_level=None)
        except sqlite3.Error as err:
            raise _open_error(path, err) from err
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            await conn.execute("PRAGMA foreign_keys = ON")
            # In WAL mode NORMAL is durable across application crashes and much faster than FULL.
            await conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as err:
            await conn.close()
            raise _open_error(path, err) from err
        return cls(path, conn)

    async def close(self) -> None:
        """Close the connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._conn.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def schema_version(self) -> int:
        """The migration number this database is at (``PRAGMA user_version``)."""
        rows = await self.fetch("PRAGMA user_version")
        return int(rows[0][0])

    async def data_version(self) -> int:
        """Changes whenever another connection (another process) commits to the file: a cheap way
        to notice that something else wrote."""
        rows = await self.fetch("PRAGMA data_version")
        return int(rows[0][0])

    # -- sessions --------------------------------------------------------------------------------

    async def create_session(self, title: str = "New chat", model: str | None = None) -> Session:
        now = time.time()
        session_id = await self.write(lambda conn: conn.execute(
            "INSERT INTO sessions (title, model, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (title, model, now, now),
        ).lastrowid)
        assert session_id is not None
        return Session(session_id, title, model, now, now, 0)

    async def list_sessions(self) -> list[Session]:
        """All sessions, most recently updated first."""
        rows = await self.fetch(f"SELECT {_SESSION_COLUMNS} FROM sessions s ORDER BY s.updated_at DESC, s.id DESC")
        return [Session(*row) for row in rows]

    async def get_session(self, session_id: int) -> Session:
        row = await self.fetch_one(f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.id = ?", (session_id,))
        if row is None:
            raise StoreError(f"no chat session {session_id}")
        return Session(*row)

    async def session_tools(self, session_id: int) -> list[str]:
        """The names of the tools this chat may call (empty: none)."""
        row = await self.fetch_one("SELECT tools FROM sessions WHERE id = ?", (session_id,))
        if row is None:
            raise StoreError(f"no chat session {session_id}")
        return list(json.loads(row[0])) if row[0] else []

    async def set_session_tools(self, session_id: int, names: Sequence[str]) -> None:
        changed = await self.write(lambda conn: conn.execute(
            "UPDATE sessions SET tools = ? WHERE id = ?",
            (json.dumps(sorted(set(names))) if names else None, session_id)).rowcount)
        if changed == 0:
            raise StoreError(f"no chat session {session_id}")

    async def rename_session(self, session_id: int, title: str) -> Session:
        changed = await self.write(lambda conn: conn.execute(
            "UPDATE sessions SET title = ?, updated_at = ? WHERE id = ?", (title, time.time(), session_id)).rowcount)
        if changed == 0:
            raise StoreError(f"no chat session {session_id}")
        return await self.get_session(session_id)

    async def delete_session(self, session_id: int) -> None:
        """Delete a session with its messages (and their search entries). Missing ids are ignored."""
        await self.write(lambda conn: conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)))

    # -- messages --------------------------------------------------------------------------------

    async def add_message(
        self,
        session_id: int,
        role: str,
        content: str,
        thinking: str | None = None,
        stats: dict[str, Any] | None = None,
        *,
        tool_calls: Sequence[MessageToolCall] = (),
        cut_off: bool = False,
    ) -> StoredMessage:
        """Append a message to a session (with the tool calls an assistant turn made, as rows of
        their own) and mark the session as just updated. ``cut_off``: a reply saved before it ended."""
        _check_role(role)
        now = time.time()
        def add(conn: sqlite3.Connection) -> int:
            # Bump first: it doubles as the existence check, so a missing session becomes a clear
            # StoreError instead of a foreign-key IntegrityError.
            if conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id)).rowcount == 0:
                raise StoreError(f"no chat session {session_id}")
            cur = conn.execute(
                "INSERT INTO messages (session_id, role, content, thinking, stats, created_at, cut_off)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session_id, role, content, thinking, _dump_stats(stats), now, int(cut_off)),
            )
            assert cur.lastrowid is not None
            _insert_calls(conn, cur.lastrowid, tool_calls)
            return cur.lastrowid

        message_id = await self.write(add)
        return StoredMessage(message_id, session_id, role, content, thinking, stats, now, cut_off)

    async def update_message(
        self,
        message_id: int,
        content: str,
        thinking: str | None = None,
        stats: dict[str, Any] | None = None,
        *,
        tool_calls: Sequence[MessageToolCall] | None = None,
        cut_off: bool = False,
    ) -> StoredMessage:
        """Replace a message's text, thinking, stats and cut-off mark (all four, as given), and its
        calls when ``tool_calls`` is given. Meant for a reply saved as it grows and finished later."""
        def update(conn: sqlite3.Connection) -> tuple[Any, ...]:
            cur = conn.execute(
                "UPDATE messages SET content = ?, thinking = ?, stats = ?, cut_off = ? WHERE id = ?",
                (content, thinking, _dump_stats(stats), int(cut_off), message_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"no chat message {message_id}")
            row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
            conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), row[1]))
            if tool_calls is not None:
                conn.execute("DELETE FROM message_tool_calls WHERE message_id = ?", (message_id,))
                _insert_calls(conn, message_id, tool_calls)
            return row

        return _message(await self.write(update))

    async def messages(self, session_id: int) -> list[StoredMessage]:
        """A session's messages in the order they were added."""
        rows = await self.fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? ORDER BY id", (session_id,)
        )
        return [_message(row) for row in rows]

    async def message_tool_calls(self, session_id: int) -> list[MessageToolCall]:
        """Every tool call the model made in a session, in order (with its result once it has one)."""
        rows = await self.fetch(
            f"SELECT {_CALL_COLUMNS} FROM message_tool_calls c JOIN messages m ON m.id = c.message_id"
            " WHERE m.session_id = ? ORDER BY c.message_id, c.position",
            (session_id,),
        )
        return [MessageToolCall(*row) for row in rows]

    async def settle_tool_call(self, message_id: int, call_id: str, *, ok: bool, summary: str,
                               decision: str | None, decided_by: str | None, result_message_id: int | None,
                               arguments: str | None = None) -> None:
        """Record how a call of ``message_id`` ended (and the arguments it ran with, if edited)."""
        await self.write(lambda conn: conn.execute(
            "UPDATE message_tool_calls SET ok = ?, summary = ?, decision = ?, decided_by = ?,"
            " result_message_id = ?, arguments = COALESCE(?, arguments) WHERE message_id = ? AND call_id = ?",
            (int(ok), summary, decision, decided_by, result_message_id, arguments, message_id, call_id),
        ))

    # -- search ----------------------------------------------------------------------------------

    async def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Find sessions whose title, or messages whose content or thinking, contain every term.

        ``query`` is taken as plain words, never as FTS5 syntax: quotes, ``AND``, ``-x``, ``a:b``
        and ``*`` are searched for as text. The last word also matches as a prefix, so results
        appear while the user is still typing. Title hits come first, then messages by relevance.
        Matched terms in a snippet are wrapped in :data:`HIGHLIGHT_OPEN` and :data:`HIGHLIGHT_CLOSE`.
        """
        terms = _terms(query)
        if not terms or limit <= 0:
            return []
        # Titles are short and few, so a LIKE scan is cheap and saves a second FTS index.
        # LIKE is substring-based and case-insensitive for ASCII only; good enough for titles.
        where = " AND ".join("s.title LIKE ? ESCAPE '\\'" for _ in terms)
        params = [f"%{_escape_like(term)}%" for term in terms]
        titles = await self.fetch(
            f"SELECT s.id, s.title FROM sessions s WHERE {where} ORDER BY s.updated_at DESC LIMIT ?",
            (*params, limit),
        )
        hits = [SearchHit(sid, title, None, None, _highlight(title, terms)) for sid, title in titles]
        if len(hits) >= limit:
            return hits
        rows = await self.fetch(
            """
            SELECT m.session_id, s.title, m.id, m.role,
                   snippet(messages_fts, -1, ?, ?, '…', 16)
            FROM messages_fts
            JOIN messages m ON m.id = messages_fts.rowid
            JOIN sessions s ON s.id = m.session_id
            WHERE messages_fts MATCH ?
            ORDER BY rank
            LIMIT ?
            """,
            (HIGHLIGHT_OPEN, HIGHLIGHT_CLOSE, _fts_query(terms), limit - len(hits)),
        )
        hits.extend(SearchHit(*row) for row in rows)
        return hits

    # -- tool-call audit trail -------------------------------------------------------------------

    async def add_tool_call(
        self,
        *,
        tool: str,
        arguments: Any,
        decision: str,
        decided_by: str,
        created_at: float | None = None,
        session_id: int | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        call_id: str | None = None,
        original_arguments: Any = None,
        duration_s: float | None = None,
        ok: bool | None = None,
        error: str | None = None,
        result_summary: str | None = None,
    ) -> int:
        """Append one audit row; returns its id. Arguments are stored as JSON, as given."""
        row_id = await self.write(lambda conn: conn.execute(
                f"INSERT INTO tool_calls ({_TOOL_CALL_INSERT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time() if created_at is None else created_at,
                    session_id,
                    run_id,
                    task_id,
                    call_id,
                    tool,
                    _dump_json(arguments),
                    None if original_arguments is None else _dump_json(original_arguments),
                    decision,
                    decided_by,
                    duration_s,
                    None if ok is None else int(ok),
                    error,
                    result_summary,
                ),
            ).lastrowid)
        assert row_id is not None
        return row_id

    async def finish_tool_call(
        self, row_id: int, *, duration_s: float, ok: bool, error: str | None, result_summary: str
    ) -> None:
        """Fill in the result of a call whose row was written before it ran."""
        changed = await self.write(lambda conn: conn.execute(
            "UPDATE tool_calls SET duration_s = ?, ok = ?, error = ?, result_summary = ? WHERE id = ?",
            (duration_s, int(ok), error, result_summary, row_id),
        ).rowcount)
        if changed == 0:
            raise StoreError(f"no tool call {row_id} in the audit trail")

    async def tool_calls(
        self, *, run_id: str | None = None, session_id: int | None = None, limit: int = 200
    ) -> list[StoredToolCall]:
        """Audit rows, newest first, optionally only those of one run and/or one chat session."""
        where, params = [], []
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self.fetch(
            f"SELECT {_TOOL_CALL_COLUMNS} FROM tool_calls {clause} ORDER BY id DESC LIMIT ?",
            (*params, max(limit, 0)),
        )
        return [_tool_call(row) for row in rows]

    # -- plumbing --------------------------------------------------------------------------------

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read (StoreError when the file cannot be read)."""
        return await self.read(lambda conn: conn.execute(sql, params).fetchall())

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work`` on the store's thread, in one hop."""
        return await self._run(work, write=False)

    async def write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work`` as one transaction on the store's thread: all of it or none, in one hop. A
        caller cancelled meanwhile cannot leave it half done: the thread finishes (or rolls back)
        the transaction whatever happens to the coroutine waiting for it."""
        return await self._run(work, write=True)

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[_Batch]:
        """Statements queued in the block (``await batch.execute(sql, params)``) run as one
        transaction when it ends; nothing runs if the block raises."""
        queued = _Batch()
        yield queued
        await self.write(queued.run)

    async def _run(self, work: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        self._check_open()
        try:
            # aiosqlite runs each statement as one job on its thread; a whole transaction as one
            # job is one thread hop instead of one per statement (a workflow task's state change
            # is 3 statements), and nothing can run between its statements.
            return await self._conn._execute(_in_transaction if write else _reading, self._conn._conn, work)
        except sqlite3.OperationalError as err:
            if write:
                raise _write_error(self.path, err) from err
            raise StoreError(f"cannot read {self.path}: {err}; check the file or use --home to point elsewhere") from err
        except sqlite3.DatabaseError as err:
            raise _damaged(self.path, err) from err

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store at {self.path} is closed")


# -- helpers ---------------------------------------------------------------------------------------


_MIGRATION_LOCK_RETRIES = 20


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > LATEST_VERSION:
        raise StoreError(
            f"{path} was written by a newer smoltui (schema {current}, this version knows "
            f"{LATEST_VERSION}); upgrade smoltui or use --home to point elsewhere"
        )
    for version, script in MIGRATIONS:
        if version <= current:
            continue
        for attempt in range(_MIGRATION_LOCK_RETRIES):
            # The script, its Python step and user_version (part of the database header) commit
            # or roll back together.
            try:
                conn.execute("BEGIN IMMEDIATE")
                if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= version:
                    conn.execute("ROLLBACK")  # another process migrated while this one waited
                    break
                _run_script(conn, script)
                step = MIGRATION_STEPS.get(version)
                if step is not None:
                    step(conn)
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
                break
            except sqlite3.Error as err:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                # Two processes opening a fresh file race here: both read the old version, one waits
                # on BEGIN IMMEDIATE, then finds the tables already made. The winner's work stands.
                if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= version:
                    break
                locked = isinstance(err, sqlite3.OperationalError) and "locked" in str(err).lower()
                if locked and attempt + 1 < _MIGRATION_LOCK_RETRIES:
                    # SQLite answers some lock conflicts at once instead of waiting (e.g. while
                    # another connection switches a fresh file to WAL): try again shortly.
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if isinstance(err, sqlite3.OperationalError) and _is_write_failure(err):
                    raise _write_error(path, err) from err
                raise StoreError(
                    f"cannot upgrade {path} to schema {version}: {err}; "
                    "back the file up and report this, or use --home to point elsewhere"
                ) from err


def _insert_calls(conn: sqlite3.Connection, message_id: int, calls: Sequence[MessageToolCall]) -> None:
    if calls:
        conn.executemany(
            f"INSERT INTO message_tool_calls ({_CALL_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(message_id, position, c.call_id, c.name, c.arguments, c.error,
              None if c.ok is None else int(c.ok), c.summary, c.decision, c.decided_by, c.result_message_id)
             for position, c in enumerate(calls)],
        )


def _prepare(path: Path) -> None:
    """Before the async connection opens: the folder, the file's header, WAL, the migrations
    (on a short-lived connection of this thread's own)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(
            f"cannot create the data directory {path.parent}: {_mkdir_reason(path.parent, err)}; "
            "fix that or use --home to point elsewhere"
        ) from err
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file; use --home to point elsewhere")
    check_file(path)
    try:
        # isolation_level=None: a migration script and its user_version bump commit together.
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    except sqlite3.Error as err:
        raise _open_error(path, err) from err
    try:
        # The first statement is where SQLite actually reads the file header.
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"cannot use write-ahead logging for {path} (got {mode!r}); "
                "put the data directory on a local disk or use --home to point elsewhere"
            )
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
    except StoreError:
        raise
    except sqlite3.Error as err:
        raise _open_error(path, err) from err
    finally:
        conn.close()


SQLITE_HEADER = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm", "-journal")
_SMOLTUI_TABLES = {"sessions", "messages", "messages_fts"}  # what migration 1 made: a smoltui file before 8


def check_file(path: Path) -> None:
    """Refuse (:class:`DatabaseRefused`) a file at ``path`` that is not an SQLite database, is
    another program's, or fails SQLite's quick check; a missing or empty file is a new database.

    Reads only, on a read-only connection: a refused file is left byte for byte as it was.
    """
    problems = inspect_file(path)
    if problems:
        raise _refused(path, f"is damaged ({_one_line('; '.join(problems))})", damaged=True)


def inspect_file(path: Path, *, thorough: bool = False, limit: int = 3) -> list[str]:
    """What SQLite's quick check (``thorough``: its integrity check) finds wrong with smoltui's
    database at ``path``, at most ``limit`` problems; empty when nothing is (or there is no file yet).

    :class:`DatabaseRefused` when the file is not an SQLite database or is another program's.
    Reads only; the ``-wal``/``-shm`` files a read-only look at a WAL database leaves behind are
    removed again when the file is refused or damaged (never one that was there before).
    """
    try:
        with path.open("rb") as file:
            head = file.read(100)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StoreError(f"cannot read {path}: {err.strerror or err}; fix its permissions or use --home "
                         "to point elsewhere") from err
    if not head:
        return []  # what SQLite itself makes of an empty file: a new database
    if not head.startswith(SQLITE_HEADER) or len(head) < 100:
        raise _refused(path, "is not a database (not an SQLite file)")
    existed = {suffix for suffix in _SIDE_FILES if Path(f"{path}{suffix}").exists()}
    problems = ["unread"]
    try:
        try:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error as err:
            raise _open_error(path, err) from err
        try:
            problems = _inspect(conn, "integrity_check" if thorough else "quick_check", limit)
        except sqlite3.OperationalError as err:
            if not ("not a database" in str(err) or "malformed" in str(err)):
                raise _open_error(path, err) from err
            problems = [str(err)]
        except sqlite3.DatabaseError as err:  # the header looked right, the rest is not readable
            problems = [str(err)]
        finally:
            conn.close()
        if problems == ["foreign"]:
            raise _refused(path, "is another program's SQLite database, not smoltui's")
        return problems
    finally:
        if problems:
            _remove_side_files(path, existed)


def _inspect(conn: sqlite3.Connection, pragma: str, limit: int) -> list[str]:
    """``["foreign"]``, or the problems ``pragma`` found (empty: none)."""
    conn.execute("PRAGMA busy_timeout = 5000")
    application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if application_id != APPLICATION_ID:
        fresh = application_id == 0 and version == 0 and not tables
        older_smoltui = application_id == 0 and version >= 1 and tables >= _SMOLTUI_TABLES
        if not (fresh or older_smoltui):
            return ["foreign"]
    # quick_check reads every page (a few ms for a typical history, about 0.25 s for 120 MB) and
    # finds what noise in a page does; integrity_check also compares each index with its table.
    found = [_one_line(str(row[0])) for row in conn.execute(f"PRAGMA {pragma}({int(limit)})")]
    return [] if found == ["ok"] else found


def backup(path: Path, dest: Path, *, force: bool = False) -> None:
    """Copy smoltui's database at ``path`` to ``dest`` with SQLite's online backup API: one
    consistent snapshot even while another process writes. The copy is checked before it takes
    the name ``dest``; an existing ``dest`` is only replaced when ``force``."""
    if not path.exists():
        raise StoreError(f"there is no database at {path} yet: nothing to back up")
    if dest.is_dir():
        raise StoreError(f"{dest} is a directory; give the backup a file name")
    if dest.exists() and not force:
        raise StoreError(f"{dest} already exists; choose another name or add --force to replace it")
    if not dest.parent.is_dir():
        raise StoreError(f"there is no folder {dest.parent} to write {dest.name} in")
    check_file(path)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        source = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            target = sqlite3.connect(tmp)
            try:
                # pages=-1 (all at once): the whole copy is one read transaction, so it is one
                # snapshot however much another process commits meanwhile.
                source.backup(target, pages=-1)
                # A single file to keep: the copy is in rollback-journal mode, with no -wal beside it.
                target.execute("PRAGMA journal_mode = DELETE")
            finally:
                target.close()
        finally:
            source.close()
        check_file(tmp)
        if force:
            os.replace(tmp, dest)
        else:
            os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwrites
    except sqlite3.OperationalError as err:
        raise _write_error(dest, err) if _is_write_failure(err) else StoreError(
            f"cannot back up {path} to {dest}: {err}") from err
    except FileExistsError as err:
        raise StoreError(f"{dest} already exists; choose another name or add --force to replace it") from err
    except OSError as err:
        raise StoreError(f"cannot write {dest}: {err.strerror or err}; choose another place") from err
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)


def _remove_side_files(path: Path, existed: set[str]) -> None:
    # A read-only connection cannot checkpoint, so it leaves the -wal (empty: readers never write
    # to it) and -shm it made. Only those are removed; a side file that was there stays.
    for suffix in _SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if suffix in existed or not side.exists():
            continue
        try:
            if suffix != "-wal" or side.stat().st_size == 0:
                side.unlink()
        except OSError:
            pass


def _refused(path: Path, what: str, *, damaged: bool = False) -> DatabaseRefused:
    remedy = ("run `smoltui db check` for details, then restore a backup or move it away" if damaged
              else "move it away or use --home to point elsewhere")
    return DatabaseRefused(f"{path} {what}; it was left untouched: {remedy}")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.replace("*** in database main ***", "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _damaged(path: Path, err: sqlite3.DatabaseError) -> StoreError:
    return StoreError(f"{path} is damaged ({err}); run `smoltui db check`, restore a backup, or use --home "
                      "to point elsewhere")


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Each statement of ``script`` inside the open transaction (``executescript`` would commit it
    first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip() and not all(part.strip().startswith("--") for part in statement.strip().splitlines()):
        conn.execute(statement)


def _mkdir_reason(directory: Path, err: OSError) -> str:
    # mkdir says "File exists" or "Not a directory" when a file sits where a folder should be;
    # naming that file tells the user what to move.
    for parent in (directory, *directory.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a directory"
            break
    return str(err.strerror or err)


def _open_error(path: Path, err: sqlite3.Error) -> StoreError:
    text = str(err)
    if "not a database" in text or "malformed" in text:
        return StoreError(
            f"{path} is not a smoltui database ({text}); move it away or use --home to point elsewhere"
        )
    if isinstance(err, sqlite3.OperationalError) and _is_write_failure(err):
        return _write_error(path, err)
    return StoreError(
        f"cannot open {path} ({text}); check that the file and its directory are writable "
        "or use --home to point elsewhere"
    )


def _is_write_failure(err: sqlite3.OperationalError) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("full", "readonly", "read-only", "locked", "busy", "disk i/o"))


def _write_error(path: Path, err: sqlite3.OperationalError) -> StoreError:
    text = str(err).lower()
    if "full" in text:
        hint = "the disk is full; free some space and try again"
    elif "readonly" in text or "read-only" in text:
        hint = "the file or its directory is read-only; fix the permissions or use --home"
    elif "locked" in text or "busy" in text:
        hint = "another process is holding it; close other smoltui windows and try again"
    else:
        hint = f"{err}; check the disk and the file's permissions or use --home"
    return StoreError(f"cannot write to {path}: {hint}")


def _check_role(role: str) -> None:
    if role not in ROLES:
        # A bug in the caller, not something the user can fix, hence not a StoreError.
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def _dump_stats(stats: dict[str, Any] | None) -> str | None:
    return None if stats is None else json.dumps(stats, sort_keys=True)


def _dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _tool_call(row: tuple[Any, ...]) -> StoredToolCall:
    values = list(row)
    values[7] = json.loads(values[7])
    values[8] = None if values[8] is None else json.loads(values[8])
    values[12] = None if values[12] is None else bool(values[12])
    return StoredToolCall(*values)


def _message(row: tuple[Any, ...]) -> StoredMessage:
    mid, session_id, role, content, thinking, stats, created_at, cut_off = row
    return StoredMessage(
        mid, session_id, role, content, thinking, None if stats is None else json.loads(stats), created_at,
        bool(cut_off),
    )


def _terms(query: str) -> list[str]:
    # A term with no letter or digit indexes to nothing; dropping it keeps `*` or `-` alone from
    # matching everything in the title scan.
    return [term for term in query.split() if any(ch.isalnum() for ch in term)]


def _fts_query(terms: list[str]) -> str:
    # Each term becomes an FTS5 string ("..." with " doubled), so operators and punctuation are
    # just text. Terms are ANDed implicitly. The trailing * outside the quotes is the one piece of
    # syntax we add: prefix match on the word being typed.
    quoted = ['"' + term.replace('"', '""') + '"' for term in terms]
    quoted[-1] += "*"
    return " ".join(quoted)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _highlight(text: str, terms: list[str]) -> str:
    pattern = "|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True))
    return re.sub(
        pattern, lambda m: f"{HIGHLIGHT_OPEN}{m.group(0)}{HIGHLIGHT_CLOSE}", text, flags=re.IGNORECASE
    )
