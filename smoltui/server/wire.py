"""The core's plain data (events, records, results) as JSON values, written once for every route.

Events and records are dataclasses of plain data; a value JSON cannot hold (a path, a table, bytes
in a tool's result) is written as text, so a stream never fails on one odd value.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_TEXT = 20_000
"""A value written as its repr is cut to this many characters (a table in a tool's result)."""


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON values: dataclasses as objects, enums as their values, paths as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 40:
        return _text(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return _text(value)


def _text(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text) - MAX_TEXT} more characters)"


def event_data(event: Any) -> dict[str, Any]:
    """One bus event as the JSON object a client gets (its ``kind`` included)."""
    data = jsonable(event)
    if event.kind == "approval_needed":
        data["request"] = approval(event.request)
    elif event.kind == "tool_call_finished":
        data["result"] = tool_result(event.result)
    return data


def approval(request: Any) -> dict[str, Any]:
    """An :class:`~smoltui.tools.calls.ApprovalRequest`, flat: what a card shows, and its id to answer."""
    call = request.call
    return {
        "call_id": call.id,
        "tool": call.tool,
        "arguments": jsonable(call.arguments),
        "session_id": call.session_id,
        "run_id": call.run_id,
        "task_id": call.task_id,
        "risk": request.risk,
        "origin": request.origin,
        "description": request.description,
        "asked_at": request.asked_at,
        "where": request.where,
    }


def tool_result(result: Any) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "content": jsonable(result.content),
        "error": result.error,
        "error_kind": result.error_kind,
        "artifacts": [{"kind": a.kind, "path": str(a.path), "summary": a.summary} for a in result.artifacts],
        "duration_s": round(result.duration_s, 4),
        "summary": result.summary(),
    }


__all__ = ["approval", "event_data", "jsonable", "tool_result"]
