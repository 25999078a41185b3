"""Every tool everywhere: a real MCP server from the package registry (mcp-server-time), configured
once, reaches every front end: ``tools list``, ``validate``, ``run``, ``chat --tools``, the TUI's
tool picker and workflow tree, and the planner. A server that cannot start is one warning naming
it, never a crash."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tui.harness import build_app, notifications, ready, store_fixture, wait_until  # noqa: F401

pytest.importorskip("mcp_server_time", reason="mcp-server-time is in the dev extra: pip install -e '.[dev]'")

from smoltui.backends.scripted import ScriptedBackend  # noqa: E402
from smoltui.cli import main  # noqa: E402
from smoltui.config import load_config  # noqa: E402
from smoltui.orchestrator.store import Store  # noqa: E402
from smoltui.screens.tool_picker import ToolPickerDialog  # noqa: E402

TOOL = "time__get_current_time"
CONFIG = f"""
[[mcp.servers]]
name = "time"
command = "{sys.executable}"
args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]

[[mcp.servers]]
name = "broken"
command = "smoltui-no-such-mcp-server"
"""
WORKFLOW = f"""
workflow:
  id: what-time
  name: what time is it
  tasks:
    - id: now
      type: tool_call
      tool: {TOOL}
      inputs: {{timezone: "Asia/Seoul"}}
      outputs: [now]
"""
CALL = f'<tool_call>{{"name": "{TOOL}", "arguments": {{"timezone": "Europe/Paris"}}}}</tool_call>'


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    root.mkdir()
    (root / "config.toml").write_text(CONFIG)
    work = tmp_path / "work"
    (work / "workflows").mkdir(parents=True)
    (work / "workflows" / "time.yaml").write_text(WORKFLOW)
    monkeypatch.setenv("SMOLTUI_HOME", str(root))
    monkeypatch.chdir(work)
    return root


def test_tools_list_shows_the_server_tools_with_their_risk_and_warns_once_about_the_broken_one(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "list", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows[TOOL]["risk"] == "read" and rows[TOOL]["origin"] == "mcp:time"
    warnings = [line for line in err.splitlines() if "broken" in line]
    assert len(warnings) == 1 and "could not start" in warnings[0], err


def test_validate_and_run_a_workflow_that_calls_an_mcp_tool(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "workflows/time.yaml"]) == 0
    assert "valid (1 tasks)" in capsys.readouterr().out
    # A read-only tool runs without asking: nothing needs --approve.
    assert main(["run", "workflows/time.yaml", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[-1]["state"] == "succeeded" and lines[-1]["tasks"] == {"now": "succeeded"}


def test_chat_calls_an_mcp_tool(home: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import smoltui.core

    monkeypatch.setattr(smoltui.core, "build_backend", lambda ref, config, paths: ScriptedBackend([CALL, "done"], delay_s=0))
    assert main(["chat", "--model", "scripted", "--tools", TOOL, "--json", "-p", "time?"]) == 0
    payload = json.loads(capsys.readouterr().out)
    (call,) = payload["tool_calls"]
    assert call["name"] == TOOL and call["ok"] and "Europe/Paris" in call["result"]


async def test_the_tui_offers_mcp_tools_and_validates_workflows_with_them(
        home: Path, store: Store, tmp_path: Path) -> None:
    config = load_config(home / "config.toml")
    app = build_app(store, ScriptedBackend(["hi"], delay_s=0), tmp_path, config=config, project_dir=Path.cwd())
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await ready(pilot)
        await wait_until(pilot, lambda: TOOL in app.core.tools, "the MCP tools", timeout=30)
        await wait_until(pilot, lambda: sum("broken" in text for text in notifications(app)) == 1,
                         "one warning about the broken server")
        tree = screen.workflow_tree
        await wait_until(pilot, lambda: tree.snapshot is not None and tree.snapshot.entries
                         and tree.snapshot.entries[0].valid, "the workflow to validate against the MCP tool")
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, ToolPickerDialog), "the tool picker")
        assert TOOL in {tool.name for tool in app.screen.tools}
        assert TOOL in {tool.name for tool in app.core.offered_tools()}  # what the planner is offered
        await pilot.press("escape")
