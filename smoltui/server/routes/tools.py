"""``/api/tools``: the server's tools (built-in, plugins, MCP) with the approval mode each gets,
and one call through the approval gate (asked about like any other: a person answers it through
``/api/approvals``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from smoltui.server.errors import not_found
from smoltui.server.routes import core_of
from smoltui.server.routes.approvals import APPROVE_HELP, FlagAnswers
from smoltui.server.wire import tool_result

router = APIRouter(prefix="/api/tools", tags=["tools"])


class ToolCallBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: dict[str, Any] = Field(default_factory=dict)
    workspace: str | None = Field(None, description="folder the tool may touch (default: the server's)")
    approve: str | None = Field(None, max_length=2000, description=APPROVE_HELP)


@router.get("", summary="Every tool, its risk and the approval mode the policy gives it")
async def list_tools(request: Request) -> list[dict[str, Any]]:
    core = core_of(request)
    return [{"name": t.name, "risk": t.risk, "origin": t.origin, "description": t.description,
             "parameters": t.parameters, "mode": core.policy.decide(t)} for t in core.tools.tools]


@router.post("/{name}/call", summary="Run one call through the approval gate (audited)")
async def call_tool(request: Request, name: str, body: ToolCallBody) -> dict[str, Any]:
    from smoltui.tools.base import ToolContext
    from smoltui.tools.calls import ToolCall

    core = core_of(request)
    if name not in core.tools:
        raise not_found(f"no tool named {name!r}")
    workspace = Path(body.workspace).expanduser().resolve() if body.workspace else core.chat.workspace
    if not workspace.is_dir():
        raise not_found(f"no folder {workspace} on the server (workspace)")
    ctx = ToolContext(workspace=workspace, artifacts_dir=core.paths.data_dir / "artifacts" / "api")
    call = ToolCall.new(name, body.arguments)
    answers = FlagAnswers(request, body.approve)
    answers.watch(lambda asked: asked.id == call.id)
    try:
        finished = await core.gate.settle(call, ctx)
    finally:
        answers.close()
    return {"call_id": finished.call.id, "decision": finished.decision, "decided_by": finished.decided_by,
            "audit_id": finished.audit_id, "notices": list(ctx.notices), **tool_result(finished.result)}
