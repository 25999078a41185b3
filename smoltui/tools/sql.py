"""Read-only SQL over SQLite files in the workspace.

Three independent locks keep a query from writing: the file is opened read-only (``mode=ro``),
``PRAGMA query_only`` is on, and an authorizer refuses every statement but reads. A progress handler
stops queries that run too long, and at most ``limit`` rows come back.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from smoltui.errors import SmoltuiError
from smoltui.tools.base import ToolContext, tool
from smoltui.tools.filesystem import resolve_inside

MAX_ROWS = 1000
MAX_SECONDS = 10.0

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


class SQLToolError(SmoltuiError):
    pass


def _authorize(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def _inside(workspace: Path, path: str) -> Path:
    target = resolve_inside(workspace, path)
    if not target.is_file():
        raise SQLToolError(f"no database file at {path} (inside the workspace {workspace})")
    return target


@tool(risk="read")
def sql_query(database: str, query: str, limit: int = 200, *, ctx: ToolContext) -> dict[str, Any]:
    """Run a read-only SQL query on a SQLite database file in the workspace.

    Args:
        database: Path of the SQLite file, relative to the workspace.
        query: One SELECT statement (WITH ... SELECT is fine).
        limit: Return at most this many rows (1 to 1000).
    """
    limit = max(1, min(limit, MAX_ROWS))
    path = _inside(ctx.workspace, database)
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2.0)
    deadline = time.monotonic() + MAX_SECONDS
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_authorizer(_authorize)
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cursor = connection.execute(query)
        except sqlite3.Warning as error:  # more than one statement
            raise SQLToolError(f"one statement at a time: {error}") from None
        except sqlite3.DatabaseError as error:
            message = str(error)
            if "not authorized" in message:
                message = "only reading queries are allowed (SELECT / WITH … SELECT)"
            elif "interrupted" in message:
                message = f"the query ran longer than {MAX_SECONDS:g} s and was stopped"
            raise SQLToolError(f"{database}: {message}") from None
        columns = [c[0] for c in cursor.description or ()]
        try:
            rows = cursor.fetchmany(limit + 1)
        except sqlite3.OperationalError as error:
            raise SQLToolError(f"{database}: the query ran longer than {MAX_SECONDS:g} s and was stopped"
                               if "interrupted" in str(error) else f"{database}: {error}") from None
    finally:
        connection.close()
    truncated = len(rows) > limit
    rows = rows[:limit]
    return {
        "columns": columns,
        "rows": [[_jsonable(v) for v in row] for row in rows],
        "row_count": len(rows),
        "truncated": truncated,
    }


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


SQL_TOOLS = [sql_query]
