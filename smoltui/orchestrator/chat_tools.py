"""The tool side of a chat: which tools a chat offers, running the model's calls through the approval
gate, and what goes back to the model.

A call the model got wrong (not JSON, no name, an unknown tool, arguments that break the schema)
is not an exception: it becomes a tool result that says what was wrong, so the model can repair the
call on its next step, and the user sees the same message in the chat.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoltui.backends.base import ToolCallDelta
from smoltui.orchestrator.approval import ApprovalGate, ToolCall
from smoltui.tools.base import Tool, ToolContext

RESULT_LIMIT = 4000
"""Characters of a tool's result the model gets back (the full result is in the audit trail)."""


@dataclass(frozen=True)
class CallOutcome:
    call: ToolCallDelta
    ok: bool
    content: str  # what the model reads next
    summary: str  # one line for the user
    arguments: str | None = None
    """The arguments it ran with, as JSON text, when they differ from the model's (an edit)."""
    decision: str | None = None
    decided_by: str | None = None


def offered(gate: ApprovalGate, names: Sequence[str]) -> list[Tool]:
    """The chat's tools that exist (a tool removed since it was switched on is skipped)."""
    found = (gate.registry.get(name) for name in names)
    return [tool for tool in found if tool is not None]


async def run_call(gate: ApprovalGate, call: ToolCallDelta, *, session_id: int, workspace: Path,
                   artifacts_dir: Path) -> CallOutcome:
    """One call of the model's, through the gate (which validates, asks, runs and audits it)."""
    if call.error:
        hint = ('write each call as <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call> '
                "with valid JSON")
        message = f"{call.error}; {hint}"
        return CallOutcome(call, False, _content(call.name or "?", error=message), message)
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError as error:
        message = f"the arguments of {call.name} are not valid JSON ({error.msg})"
        return CallOutcome(call, False, _content(call.name, error=message), message)
    if not isinstance(arguments, dict):
        message = f"the arguments of {call.name} must be a JSON object"
        return CallOutcome(call, False, _content(call.name, error=message), message)
    ctx = ToolContext(workspace=workspace, artifacts_dir=artifacts_dir, session_id=session_id)
    finished = await gate.settle(ToolCall(call.id, call.name, arguments, session_id=session_id), ctx)
    result = finished.result
    text = json.dumps({"name": call.name, **result.for_model()}, ensure_ascii=False, default=str)
    if len(text) > RESULT_LIMIT:
        text = text[:RESULT_LIMIT] + f"… ({len(text) - RESULT_LIMIT} more characters not shown)"
    ran = finished.call.arguments
    edited = json.dumps(ran, ensure_ascii=False) if ran != arguments else None
    return CallOutcome(call, result.ok, text, result.summary(160), edited, finished.decision, finished.decided_by)


def _content(name: str, *, error: str) -> str:
    return json.dumps({"name": name, "error": error, "kind": "invalid_call"}, ensure_ascii=False)


def describe_arguments(arguments: str | Mapping[str, Any], limit: int = 200) -> str:
    """``city="Paris", days=3`` for a one-line view of a call."""
    try:
        values = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, dict):
        text = str(arguments)
    else:
        text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in values.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"
