"""MCP servers contribute tools: a real stdio server of our own, called through the registry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from smoltui.tools.base import ToolContext  # noqa: E402
from smoltui.tools.mcp_client import MCPServerConfig, connect_servers  # noqa: E402
from smoltui.tools.registry import ToolRegistry  # noqa: E402

SERVER = Path(__file__).parent / "fixtures" / "mcp_server.py"


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path, artifacts_dir=tmp_path / "artifacts")


async def test_tools_of_an_mcp_server_are_registered_and_called(ctx: ToolContext) -> None:
    connections, problems = await connect_servers(
        [MCPServerConfig(name="demo", command=sys.executable, args=[str(SERVER)])]
    )
    assert problems == []
    try:
        registry = ToolRegistry(connections[0].tools)
        shout = registry.get("demo__shout")
        assert shout is not None and shout.risk == "execute" and shout.origin == "mcp:demo"
        assert shout.parameters["properties"]["text"]["type"] == "string"
        assert "Upper-case" in shout.description
        result = await registry.call("demo__shout", {"text": "hi", "times": 2}, ctx)
        assert result.ok and result.content in ("HI HI", {"result": "HI HI"})
        bad = await registry.call("demo__shout", {"times": "two"}, ctx)
        assert not bad.ok and bad.error_kind == "invalid_arguments" and "text" in bad.error
        failed = await registry.call("demo__fail", {"reason": "no disk"}, ctx)
        assert not failed.ok and "no disk" in failed.error
    finally:
        for connection in connections:
            await connection.close()


async def test_a_server_that_cannot_start_is_one_clear_line() -> None:
    connections, problems = await connect_servers(
        [MCPServerConfig(name="ghost", command="/nonexistent/mcp-server")]
    )
    assert connections == []
    assert len(problems) == 1 and problems[0].startswith("MCP server ghost (/nonexistent/mcp-server) could not start")


async def test_an_mcp_tool_goes_through_the_approval_gate_and_the_audit(ctx: ToolContext, tmp_path: Path) -> None:
    from smoltui.orchestrator.approval import ApprovalGate, Decision, Policy, ToolCall
    from smoltui.orchestrator.audit import AuditLog
    from smoltui.orchestrator.events import EventBus
    from smoltui.orchestrator.store import Store

    connections, _ = await connect_servers([MCPServerConfig(name="demo", command=sys.executable, args=[str(SERVER)])])
    store = await Store.open(tmp_path / "db.sqlite")
    bus = EventBus()
    gate = ApprovalGate(ToolRegistry(connections[0].tools), Policy(), audit=AuditLog(store), bus=bus, timeout_s=10)
    asked: list[str] = []

    def approve(event) -> None:  # noqa: ANN001 - stands in for the approval UI
        if event.kind == "approval_needed":
            asked.append(event.call.tool)
            gate.answer(event.call.id, Decision("once"))

    bus.subscribe(approve)
    try:
        result = await gate.run(ToolCall.new("demo__shout", {"text": "ok"}, session_id=7), ctx)
        assert result.ok and "OK" in str(result.content)
        assert asked == ["demo__shout"]  # no annotations, no configured risk: execute, so the default policy asks
        (entry,) = await AuditLog(store).list(session_id=7)
        assert entry.tool == "demo__shout" and entry.decision == "once" and entry.decided_by == "user"
        assert entry.ok
    finally:
        await store.close()
        for connection in connections:
            await connection.close()
