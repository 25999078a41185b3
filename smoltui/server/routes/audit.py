"""``/api/audit``: the recorded tool calls, newest first: who decided, and what came of each."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from smoltui.server.routes import core_of
from smoltui.server.wire import jsonable

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", summary="Audit rows, newest first (of one run and/or chat session)")
async def audit(request: Request, run_id: str | None = Query(None), session_id: int | None = Query(None),
                limit: int = Query(200, ge=1, le=10_000)) -> list[dict[str, Any]]:
    from smoltui.orchestrator.audit import AuditLog

    rows = await AuditLog(core_of(request).store).list(run_id=run_id, session_id=session_id, limit=limit)
    return [jsonable(row.as_dict()) for row in rows]
