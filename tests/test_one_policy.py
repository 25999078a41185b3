"""One policy: the same config and flags give the same decision in every front end.

The config denies code execution and lets reads run; writes ask (the built-in default). Each
headless front end (``tools run``, ``chat``, ``run``, ``resume``) is driven through the real command
line with the same ``--approve`` flag, and the audit trail says what was decided for each tool.
The TUI (nobody's flag: a person is asked) and the planner (which offers only tools the policy does
not deny) are checked against the same config.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tui.harness import SIZE, build_app, ready, store_fixture, wait_until  # noqa: F401

from smoltui.backends.scripted import ScriptedBackend
from smoltui.cli import main
from smoltui.config import load_config
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.store import Store
from smoltui.paths import Paths
from smoltui.screens.approval_card import ApprovalCard
from smoltui.screens.plan_dialog import PlanDialog
from smoltui.tools.calls import Decision

CONFIG = """
[approval]
defaults = { execute = "deny" }
tools = { read_file = "auto" }
"""
TOOLS = ("python", "write_file", "read_file")
ARGUMENTS = {
    "python": {"code": "print(1)"},
    "write_file": {"path": "out.txt", "content": "hello"},
    "read_file": {"path": "in.txt"},
}
# What each --approve value decides for each tool: a config deny stays denied, an auto runs, and the
# flag only settles the ask (write_file).
EXPECTED = {
    "all": {"python": "deny", "write_file": "auto", "read_file": "auto"},
    "none": {"python": "deny", "write_file": "deny", "read_file": "auto"},
    "python,write_file": {"python": "deny", "write_file": "auto", "read_file": "auto"},
    "read": {"python": "deny", "write_file": "deny", "read_file": "auto"},
}
CALLS_REPLY = "".join(
    f'<tool_call>{{"name": "{name}", "arguments": {json.dumps(ARGUMENTS[name])}}}</tool_call>' for name in TOOLS
)
WORKFLOW = """
workflow:
  id: three-calls
  name: three calls
  tasks:
""" + "".join(
    f"""    - id: {name}
      type: tool_call
      tool: {name}
      inputs: {json.dumps(ARGUMENTS[name])}
""" for name in TOOLS
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    root.mkdir()
    (root / "config.toml").write_text(CONFIG)
    work = tmp_path / "work"
    work.mkdir()
    (work / "in.txt").write_text("input")
    (work / "flow.yaml").write_text(WORKFLOW)
    monkeypatch.setenv("SMOLTUI_HOME", str(root))
    monkeypatch.chdir(work)
    return root


def decisions(home: Path) -> dict[str, str]:
    """The last decision the audit trail recorded for each tool."""
    async def read() -> list:
        async with await Store.open(Paths.resolve(home).database) as store:
            return await AuditLog(store).list()

    found: dict[str, str] = {}
    for row in reversed(asyncio.run(read())):  # oldest first: the last one wins
        found[row.tool] = row.decision
    return found


@pytest.fixture
def scripted_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model scripted`` answers with the three calls, then with text."""
    import smoltui.core

    real = smoltui.core.build_backend

    def build(ref, config, paths):  # noqa: ANN001, ANN202
        if ref.source == "scripted":
            return ScriptedBackend([CALLS_REPLY, "done"], delay_s=0)
        return real(ref, config, paths)

    monkeypatch.setattr(smoltui.core, "build_backend", build)


@pytest.mark.parametrize("flag", sorted(EXPECTED))
def test_tools_run(home: Path, flag: str) -> None:
    for name in TOOLS:
        main(["tools", "run", name, "--args", json.dumps(ARGUMENTS[name]), "--approve", flag])
    assert decisions(home) == EXPECTED[flag]


@pytest.mark.parametrize("flag", sorted(EXPECTED))
def test_chat(home: Path, flag: str, scripted_calls: None) -> None:
    assert main(["chat", "--model", "scripted", "--tools", ",".join(TOOLS), "--approve", flag, "-p", "go"]) == 0
    assert decisions(home) == EXPECTED[flag]


@pytest.mark.parametrize("flag", sorted(EXPECTED))
def test_run(home: Path, flag: str) -> None:
    main(["run", "flow.yaml", "--approve", flag])
    assert decisions(home) == EXPECTED[flag]


@pytest.mark.parametrize("flag", ["all", "python,write_file"])
def test_resume(home: Path, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "flow.yaml", "--approve", "none", "--json"]) == 1  # write_file refused: the run fails
    run_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    main(["resume", run_id, "--approve", flag])
    assert decisions(home) == EXPECTED[flag]


async def test_the_tui_asks_what_the_config_asks_and_nothing_else(home: Path, store: Store, tmp_path: Path) -> None:
    config = load_config(home / "config.toml")
    app = build_app(store, ScriptedBackend([CALLS_REPLY, "done"], delay_s=0), tmp_path, config=config)
    (tmp_path / "in.txt").write_text("input")
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        session = await store.create_session("policy", "scripted")
        await app.core.chat.set_session_tools(session.id, list(TOOLS))
        send = asyncio.ensure_future(app.core.chat.send(session.id, "go"))
        # python is refused by the policy and read_file runs before anyone is asked; write_file asks.
        await wait_until(pilot, lambda: app.core.gate.waiting(), "write_file to ask")
        (request,) = app.core.gate.waiting()
        assert request.call.tool == "write_file"
        assert app.core.gate.answer(request.call.id, Decision("once"))
        await asyncio.wait_for(send, 30)
        assert not screen.query(ApprovalCard)
    rows = await AuditLog(store).list()
    found = {row.tool: (row.decision, row.decided_by) for row in rows}
    assert found == {"python": ("deny", "policy"), "read_file": ("auto", "policy"), "write_file": ("once", "user")}


async def test_the_planner_is_offered_no_tool_the_policy_denies(home: Path, store: Store, tmp_path: Path) -> None:
    config = load_config(home / "config.toml")
    app = build_app(store, ScriptedBackend(["{}"], delay_s=0), tmp_path, config=config)
    core = app.core
    assert "python" in core.tools and "python" not in {t.name for t in core.offered_tools()}
    planner = core.planner(ScriptedBackend(["{}"]))
    assert "python" not in planner.tools and {"write_file", "read_file"} <= set(planner.tools)
    assert set(PlanDialog(core, tmp_path).tools) == set(planner.tools)
