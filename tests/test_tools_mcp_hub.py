"""MCPHub: real MCP servers (mcp-server-time from PyPI, and our fixture) started lazily, once, and
watched for tool-list changes and deaths."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path

import pytest

pytest.importorskip("mcp_server_time", reason="mcp-server-time is in the dev extra: pip install -e '.[dev]'")

from smoltui.tools.base import Tool, ToolContext  # noqa: E402
from smoltui.tools.mcp_client import MCPHub, MCPServerConfig, risk_from_annotations  # noqa: E402
from smoltui.tools.registry import ToolRegistry  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "mcp_server.py"


def time_server(name: str = "time", **extra: object) -> MCPServerConfig:
    """The real time server from the package registry, as its users configure it."""
    return MCPServerConfig(name=name, command=sys.executable, args=["-m", "mcp_server_time"], **extra)


def counted(config: MCPServerConfig, log: Path) -> MCPServerConfig:
    """The same server, started through a shell that notes each start in ``log``."""
    script = f'echo {config.name} $$ >> "{log}"; exec "$@"'  # exec: the pid stays the server's
    return config.model_copy(update={"command": "sh", "args": ["-c", script, "sh", config.command, *config.args]})


def spawned(log: Path) -> dict[str, int]:
    """server name -> pid, one entry per start noted in ``log``."""
    if not log.exists():
        return {}
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len({name for name, _ in lines}) == len(lines), f"a server was started twice: {lines}"
    return {name: int(pid) for name, pid in lines}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def fixture_server() -> MCPServerConfig:
    return MCPServerConfig(name="demo", command=sys.executable, args=[str(FIXTURE)], start_timeout_s=20)


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path, artifacts_dir=tmp_path / "artifacts")


async def test_the_time_server_tools_are_read_only_and_tell_the_time(ctx: ToolContext) -> None:
    hub = MCPHub([time_server()])
    await hub.start()
    try:
        assert hub.problems == []
        registry = ToolRegistry()
        for origin, tools in hub.tools_by_origin().items():
            assert registry.replace_origin(origin, tools) == []
        assert {(t.name, t.risk, t.origin) for t in registry.tools} == {
            ("time__get_current_time", "read", "mcp:time"),  # readOnlyHint, closed world
            ("time__convert_time", "read", "mcp:time"),
        }

        now = await registry.call("time__get_current_time", {"timezone": "Asia/Tokyo"}, ctx)
        assert now.ok, now.error
        assert now.content["timezone"] == "Asia/Tokyo"
        assert datetime.fromisoformat(now.content["datetime"]).utcoffset().total_seconds() == 9 * 3600

        wrong = await registry.call("time__get_current_time", {"timezone": "Mars/Olympus_Mons"}, ctx)
        assert not wrong.ok and wrong.error_kind == "failed"
        assert "Invalid timezone" in wrong.error and "Mars/Olympus_Mons" in wrong.error
    finally:
        await hub.close()
    closed = await registry.call("time__get_current_time", {"timezone": "UTC"}, ctx)
    assert not closed.ok
    assert "MCP server time" in closed.error and "is not running (smoltui closed it)" in closed.error


async def test_nothing_starts_before_start_and_concurrent_starts_spawn_each_server_once(tmp_path: Path) -> None:
    log = tmp_path / "spawned.txt"
    hub = MCPHub([counted(time_server(), log), counted(time_server("pinned", risk="execute"), log)])
    assert spawned(log) == {} and hub.tools == [] and not hub.started

    impatient = asyncio.ensure_future(hub.start())
    await asyncio.sleep(0)  # let it begin the start, then give up on it
    impatient.cancel()
    await asyncio.gather(hub.start(), hub.start(), hub.start())
    await hub.start()  # and later: a no-op
    try:
        assert impatient.cancelled() and hub.started and hub.problems == []
        pids = spawned(log)
        assert sorted(pids) == ["pinned", "time"] and all(alive(pid) for pid in pids.values())
        risks = {t.name: t.risk for t in hub.tools}
        assert risks["time__convert_time"] == "read"
        assert risks["pinned__convert_time"] == "execute"  # the config's risk overrides the annotations
    finally:
        await hub.close()
    assert not any(alive(pid) for pid in pids.values())
    await hub.start()  # closed stays closed
    assert spawned(log) == pids and hub.tools == []


async def test_closing_while_a_server_starts_stops_it(tmp_path: Path) -> None:
    log = tmp_path / "spawned.txt"
    silent = MCPServerConfig(name="silent", command=sys.executable, args=["-c", "import sys; sys.stdin.read()"])
    hub = MCPHub([counted(silent, log)])
    starting = asyncio.ensure_future(hub.start())
    async def noted() -> None:  # the shell notes the start before it becomes the server
        while not spawned(log):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(noted(), 10)
    await hub.close()
    await starting
    (pid,) = spawned(log).values()
    assert not alive(pid)
    assert hub.problems == ["MCP server silent (sh) could not start: smoltui closed it while it started"]


async def test_servers_that_cannot_start_are_one_line_each_and_the_rest_still_work(
    ctx: ToolContext, caplog: pytest.LogCaptureFixture
) -> None:
    silent = MCPServerConfig(name="silent", command=sys.executable, args=["-c", "import sys; sys.stdin.read()"],
                             start_timeout_s=2)
    hub = MCPHub([
        MCPServerConfig(name="ghost", command="/nonexistent/mcp-server"),
        MCPServerConfig(name="broken", command=sys.executable, args=["-c", "import sys; sys.exit('no config file')"]),
        silent,
        fixture_server(),
    ])
    await hub.start()
    try:
        ghost, broken, hung = hub.problems
        assert ghost.startswith("MCP server ghost (/nonexistent/mcp-server) could not start: ")
        assert "No such file" in ghost
        assert broken.startswith(f"MCP server broken ({sys.executable}) could not start: ")
        assert broken.endswith("(it said: no config file)")
        assert hung == f"MCP server silent ({sys.executable}) could not start: no answer within 2 s"
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == hub.problems  # one warning per server, in the log file too
        assert {t.origin for t in hub.tools} == {"mcp:demo"}
        result = await ToolRegistry(hub.tools).call("demo__shout", {"text": "still here"}, ctx)
        assert result.ok and "STILL HERE" in str(result.content)
    finally:
        await hub.close()


async def test_a_changed_tool_list_is_listed_again_and_reported(ctx: ToolContext) -> None:
    registry = ToolRegistry()
    changed = asyncio.Event()
    heard: list[tuple[str, list[str]]] = []

    def on_change(origin: str, tools: list[Tool]) -> None:
        heard.append((origin, [t.name for t in tools]))
        registry.replace_origin(origin, tools)
        changed.set()

    hub = MCPHub([fixture_server()], on_change=on_change)
    await hub.start()
    try:
        for origin, tools in hub.tools_by_origin().items():
            registry.replace_origin(origin, tools)
        assert "demo__hello" not in registry
        assert registry.get("demo__grow").risk == "read"  # readOnlyHint, closed world
        assert registry.get("demo__shout").risk == "execute"  # no annotations: smoltui cannot know

        grown = await registry.call("demo__grow", {"name": "hello"}, ctx)
        assert grown.ok, grown.error
        await asyncio.wait_for(changed.wait(), 10)

        assert heard == [("mcp:demo", ["demo__shout", "demo__fail", "demo__grow", "demo__die", "demo__hello"])]
        assert registry.get("demo__hello").risk == "read"
        hello = await registry.call("demo__hello", {}, ctx)
        assert hello.ok and "I am hello" in str(hello.content)
        assert "demo__hello" in {t.name for t in hub.tools}
    finally:
        await hub.close()


async def test_a_server_that_dies_makes_its_calls_fail_clearly(ctx: ToolContext) -> None:
    hub = MCPHub([fixture_server()])
    await hub.start()
    try:
        registry = ToolRegistry(hub.tools)
        died = await registry.call("demo__die", {}, ctx)
        assert not died.ok and died.error_kind == "failed"
        assert "MCP server demo" in died.error and "is not running (its connection closed)" in died.error
        after = await registry.call("demo__shout", {"text": "anyone?"}, ctx)
        assert not after.ok and after.error == died.error
    finally:
        await hub.close()


@pytest.mark.parametrize(("hints", "risk"), [
    (None, "execute"),
    ({}, "execute"),
    ({"title": "Clock", "idempotent_hint": True}, "execute"),
    ({"open_world_hint": False}, "execute"),
    ({"read_only_hint": True}, "read"),
    ({"read_only_hint": True, "open_world_hint": False}, "read"),  # mcp-server-time, git_status
    ({"read_only_hint": True, "open_world_hint": True}, "network"),  # a web search: reads the world
    ({"read_only_hint": False}, "write"),
    ({"read_only_hint": False, "destructive_hint": False}, "write"),  # git_commit: adds only
    ({"destructive_hint": True}, "write"),  # git_reset
    ({"destructive_hint": True, "open_world_hint": True}, "network"),
    ({"open_world_hint": True}, "network"),
])
def test_risk_comes_only_from_hints_a_server_sets(hints: dict | None, risk: str) -> None:
    from mcp.types import ToolAnnotations

    assert risk_from_annotations(None if hints is None else ToolAnnotations(**hints)) == risk
