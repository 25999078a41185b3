"""``smoltui audit``: the recorded tool calls, who decided and what came of them."""

from __future__ import annotations

import argparse
import asyncio
import json
from types import SimpleNamespace
from typing import Any

from smoltui.cli.common import paths_of, table, when
from smoltui.cli.remote import through_server
from smoltui.errors import SmoltuiError


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise SmoltuiError("--limit must be at least 1")
    served = through_server(args, lambda client: _served(args, client))
    if served is not None:
        return served
    paths = paths_of(args)
    rows = asyncio.run(_rows(args)) if paths.database.exists() else []  # never create a database to say so
    return _print(args, [row.as_dict() for row in rows] if args.json else rows)


async def _served(args: argparse.Namespace, client: Any) -> int:
    rows = await client.audit(run_id=args.run, session_id=args.session, limit=args.limit)
    return _print(args, rows if args.json else [SimpleNamespace(**row) for row in rows])


def _print(args: argparse.Namespace, rows: list) -> int:
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no tool calls recorded")
        return 0
    print(_table(rows))
    return 0


async def _rows(args: argparse.Namespace) -> list:
    from smoltui.orchestrator.audit import AuditLog
    from smoltui.orchestrator.store import Store

    async with await Store.open(paths_of(args).database) as store:
        return await AuditLog(store).list(run_id=args.run, session_id=args.session, limit=args.limit)


def _table(rows) -> str:  # noqa: ANN001
    def ok(row) -> str:  # noqa: ANN001
        return "-" if row.ok is None else ("ok" if row.ok else "error")

    def where(row) -> str:  # noqa: ANN001
        parts = []
        if row.session_id is not None:
            parts.append(f"session {row.session_id}")
        if row.run_id:
            parts.append(f"run {row.run_id}" + (f"/{row.task_id}" if row.task_id else ""))
        return ", ".join(parts) or "-"

    lines = []
    for row in rows:
        summary = " ".join((row.result_summary or "").split())
        lines.append((
            str(row.id), when(row.created_at), row.tool, row.decision, row.decided_by, ok(row),
            "-" if row.duration_s is None else f"{row.duration_s:.2f}s", where(row),
            summary if len(summary) <= 60 else summary[:59] + "…",
        ))
    header = ("ID", "WHEN", "TOOL", "DECISION", "BY", "RESULT", "TIME", "WHERE", "SUMMARY")
    return table(header, lines, last_free=True)
