"""Failures are failures: code that fails fails its task, values of the wrong type start nothing,
and a run whose driver died says so everywhere instead of looking busy.

Real pieces: ``smoltui run`` / ``runs`` / ``logs`` as subprocesses on a private home, the python tool
in its sandbox, SQLite files, the Textual app under Pilot with a scripted model.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette
from tui.harness import build_app, build_core, ready, scripted, store_fixture, type_text, wait_until  # noqa: F401

from smoltui.backends.base import GenerationParams
from smoltui.backends.scripted import ScriptedBackend
from smoltui.config import Config
from smoltui.orchestrator.approval import ApprovalGate, Policy
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.chat import ChatService, ChatSettings
from smoltui.orchestrator.events import EventBus, RunsChanged, ToolCallDone
from smoltui.orchestrator.model import Model
from smoltui.orchestrator.run_store import HOST, RunStore
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workflow_spec import WorkflowError, coerce_variables, load_workflow
from smoltui.paths import Paths
from smoltui.screens import run_view
from smoltui.screens.launch_dialog import LaunchDialog
from smoltui.screens.run_view import RunScreen
from smoltui.tools.python_exec import PYTHON_TOOLS
from smoltui.tools.registry import ToolRegistry
from tests.test_cli import run
from tests.test_workflow_cli import _start_run_until


def _runs(env: dict[str, str]) -> list[dict]:
    listed = run(env, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def _file(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# -- code that fails fails its task ----------------------------------------------------------------

FAILING = """\
workflow:
  id: failing
  tasks:
    - {id: raises, type: tool_call, tool: python, inputs: {code: "raise ValueError('boom')"}}
    - {id: after_raise, type: tool_call, tool: python, depends_on: [raises], inputs: {code: "open('ran1', 'w')"}}
    - {id: exits, type: tool_call, tool: python, inputs: {code: "import sys; print('partial'); sys.exit(3)"}}
    - {id: after_exit, type: tool_call, tool: python, depends_on: [exits], inputs: {code: "open('ran2', 'w')"}}
    - {id: fine, type: tool_call, tool: python, inputs: {code: "print('ok')"}}
"""


def test_python_code_that_raises_or_exits_non_zero_fails_its_task(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = _file(tmp_path / "wf", "failing.yaml", FAILING)
    result = run(cli_env, "run", str(path), "--approve", "python")
    assert result.returncode == 1, result.stdout + result.stderr
    [row] = _runs(cli_env)
    assert row["state"] == "failed"
    assert row["task_states"] == {"raises": "failed", "after_raise": "upstream_failed", "exits": "failed",
                                  "after_exit": "upstream_failed", "fine": "succeeded"}
    # The error names what went wrong, in one line each (then what the code printed).
    assert "raises failed: tool `python` failed: the code raised ValueError: boom" in result.stderr
    assert "exits failed: tool `python` failed: the code exited with code 3" in result.stderr
    assert "partial" in result.stderr
    # What depends on a failure did not run.
    assert not (path.parent / "ran1").exists() and not (path.parent / "ran2").exists()


def call(name: str, **arguments: object) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


async def test_the_chat_model_reads_that_its_python_code_failed(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "smoltui.db")
    try:
        bus = EventBus()
        events: list[object] = []
        bus.subscribe(events.append)
        gate = ApprovalGate(ToolRegistry(PYTHON_TOOLS), Policy(defaults={"execute": "auto"}), audit=AuditLog(store),
                            bus=bus, timeout_s=None)
        backend = ScriptedBackend([call("python", code="print('half')\n1 / 0"), "The division failed."], delay_s=0)
        chat = ChatService(Model(backend, bus, label="scripted"), store,
                           ChatSettings(params=GenerationParams(max_tokens=200)), bus=bus, gate=gate,
                           workspace=tmp_path)
        session = await store.create_session("t", "scripted")
        await chat.load_model()
        await chat.set_session_tools(session.id, ["python"])
        finished = await chat.send(session.id, "Divide by zero")
        assert finished is not None and finished.content == "The division failed."  # the chat went on
        (done,) = [e for e in events if isinstance(e, ToolCallDone)]
        assert not done.ok and "ZeroDivisionError: division by zero" in done.summary
        # What the model read next: an error, with the exception and what the code printed.
        seen = json.loads(backend.prompts[1][-1].content)
        assert seen["kind"] == "failed" and "result" not in seen
        assert seen["error"].startswith("python: the code raised ZeroDivisionError: division by zero")
        assert "Traceback" in seen["error"] and "half" in seen["error"]
    finally:
        await store.close()


# -- values are checked against the variable's type ------------------------------------------------

TYPED = """\
workflow:
  id: typed
  variables:
    count: {type: integer, default: 2, description: how many}
    threshold: 3
    ratio: {type: number, default: 3}
    flag: false
    items: {type: list, default: []}
  tasks:
    - id: show
      type: tool_call
      tool: python
      inputs: {code: "open('started', 'w'); print(${count} * ${ratio}, ${flag}, ${items})"}
      outputs: [shown]
"""


@pytest.mark.parametrize(("assignment", "expected"), [
    ("count=big", "variable `count` of workflow `typed` expects a whole number (integer), not 'big'"),
    ("threshold=big", "variable `threshold` of workflow `typed` expects a whole number (integer), not 'big'"),
])
def test_a_var_of_the_wrong_type_starts_nothing(cli_env: dict[str, str], tmp_path: Path, assignment: str,
                                                expected: str) -> None:
    path = _file(tmp_path / "wf", "typed.yaml", TYPED)
    result = run(cli_env, "run", str(path), "--approve", "python", "--var", assignment)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"smoltui: --var {assignment}: {expected}\n"
    assert _runs(cli_env) == [] and not (path.parent / "started").exists()


def test_var_values_are_parsed_as_their_variables_type(tmp_path: Path) -> None:
    spec = load_workflow(_file(tmp_path, "typed.yaml", TYPED)).spec
    assert spec.variables == {"count": 2, "threshold": 3, "ratio": 3, "flag": False, "items": []}
    values = {"count": "7", "ratio": "2.5", "items": "[1, 2]", "threshold": 4}
    assert coerce_variables(spec, values) == {"count": 7, "ratio": 2.5, "items": [1, 2], "threshold": 4}
    for word, meant in (("true", True), ("yes", True), ("1", True), ("no", False), ("0", False), ("false", False)):
        assert coerce_variables(spec, {"flag": word}) == {"flag": meant}
    for name, value, kind in (("flag", "maybe", "boolean"), ("ratio", "nan", "number"), ("items", "3", "list"),
                              ("count", "2.5", "integer"), ("count", True, "integer")):
        with pytest.raises(WorkflowError, match=rf"variable `{name}` of workflow `typed` expects .*\({kind}\)"):
            coerce_variables(spec, {name: value})


async def test_the_launch_form_refuses_a_value_of_the_wrong_type_inline(store: Store, tmp_path: Path) -> None:
    _file(tmp_path / "workflows", "typed.yaml", TYPED)
    config = Config()
    config.approval = Policy(defaults={"execute": "auto"})
    core = build_core(store, scripted("ok"), tmp_path, config=config, project_dir=tmp_path)
    app = build_app(store, None, tmp_path, core=core)
    async with app.run_test() as pilot:
        screen = await ready(pilot)
        await pilot.press("f3")
        tree = screen.workflow_tree
        await wait_until(pilot, lambda: tree.snapshot is not None and tree.has_focus, "the workflow tree")
        for _ in range(20):
            if tree.cursor_node is not None and "typed" in str(tree.cursor_node.label):
                break
            await pilot.press("down")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog), "the launch form")
        dialog = app.screen
        dialog.query_one("#var-count").value = "big"
        await pilot.press("ctrl+s")
        error = dialog.query_one("#err-count")
        await wait_until(pilot, lambda: "big" in str(error.render()), "the field's error")
        # The words of the command line, under the field; the form stays and nothing runs.
        assert str(error.render()) == "✗ variable `count` expects a whole number (integer), not 'big'"
        assert isinstance(app.screen, LaunchDialog) and await core.run_store.list_runs() == []
        # A number variable whose default is 3 takes 2.5: its declared type decides, not the default's.
        dialog.query_one("#var-count").value = "4"
        dialog.query_one("#var-ratio").value = "2.5"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), "the run view")
        run_id = app.screen.run_id
        result = await asyncio.wait_for(core.runs.wait(run_id), 30)
        assert result is not None and result.ok, result
        assert result.outputs["show"]["shown"]["stdout"] == "10.0 False []\n"
        assert (await core.run_store.get_run(run_id)).variables["count"] == 4


# -- a run whose driver died is interrupted, and says so -------------------------------------------

SLOW = """\
workflow:
  id: slow
  tasks:
    - {id: mark, type: tool_call, tool: python, inputs: {code: "print('marked')"}}
    - {id: slow, type: tool_call, tool: python, depends_on: [mark], inputs: {code: "import time; time.sleep(60)",
       timeout_s: 120}}
    - {id: after, type: tool_call, tool: python, depends_on: [slow], inputs: {code: "print('after')"}}
"""


def test_a_killed_runs_tasks_show_interrupted_and_logs_follow_says_so(cli_env: dict[str, str], home: Path,
                                                                      tmp_path: Path) -> None:
    path = _file(tmp_path / "wf", "slow.yaml", SLOW)
    database = Paths.resolve(str(home)).database
    driver = _start_run_until([str(path), "--approve", "python"], cli_env, database,
                              lambda states: states.get("slow") == "running")
    try:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()

    [row] = _runs(cli_env)
    assert row["state"] == "interrupted"
    assert row["task_states"] == {"mark": "succeeded", "slow": "interrupted", "after": "interrupted"}
    started = time.monotonic()
    followed = run(cli_env, "logs", row["id"], "--follow", timeout=30)  # it does not wait for what never comes
    assert followed.returncode == 0, followed.stderr
    assert time.monotonic() - started < 20
    assert followed.stderr == (f"smoltui: run {row['id']} was interrupted: pid {driver.pid} on {HOST} stopped "
                               f"driving it (killed or crashed); resume it with `smoltui resume {row['id']}`\n")
    assert "mark: task_state: succeeded" in followed.stdout


async def _interrupted_run(store: Store, path: Path, *, running_for: float = 10.0, silent_for: float = 4.0) -> str:
    """A run stored as its killed driver left it: `mark` done, `slow` running, `after` pending,
    and a lease whose owner (a process that has exited) last renewed it ``silent_for`` seconds ago."""
    runs = RunStore(store)
    record = await runs.create_run("slow", name="Slow", file=str(path), task_ids=["mark", "slow", "after"])
    await runs.set_run_state(record.id, "running")
    await runs.set_task_state(record.id, "mark", "succeeded", attempt=1)
    await runs.set_task_state(record.id, "slow", "running", attempt=1)
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    now = time.time()
    await store.write(lambda conn: (
        conn.execute("UPDATE task_runs SET started_at = ? WHERE task_id = 'slow' AND run_id = ?",
                     (now - running_for, record.id)),
        conn.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (now - silent_for, record.id)),
        conn.execute("INSERT INTO run_leases (run_id, token, pid, host, heartbeat, acquired_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (record.id, "gone", dead.pid, HOST, now - silent_for, now - running_for))))
    return record.id


def _cell(screen: RunScreen, task_id: str, column: int) -> str:
    return str(screen.table.get_row(task_id)[column])


async def test_the_run_view_shows_an_interrupted_task_with_its_clock_stopped(store: Store, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, "slow.yaml", SLOW)
    run_id = await _interrupted_run(store, path)
    app = build_app(store, None, tmp_path)
    async with app.run_test() as pilot:
        await app.push_screen(RunScreen(app.core, run_id))
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_until(pilot, lambda: screen.loaded is not None and screen.table.row_count == 3, "the run")
        assert [_cell(screen, t, 2) for t in ("mark", "slow", "after")] == ["succeeded", "interrupted", "interrupted"]
        assert "interrupted" in str(screen.title_label.render())
        shown = _cell(screen, "slow", 3)
        assert shown == "6.0s"  # from its start to when its driver was last seen
        # A minute later, and the view reads the run again: the stopped clock has not moved.
        monkeypatch.setattr(run_view, "clock", lambda: time.time() + 60)
        app.core.bus.publish(RunsChanged((run_id,)))
        await pilot.pause()
        await screen.workers.wait_for_complete()
        assert _cell(screen, "slow", 3) == shown and _cell(screen, "slow", 2) == "interrupted"


async def test_the_tui_says_at_start_that_runs_were_interrupted_and_resumes_them(store: Store,
                                                                                 tmp_path: Path) -> None:
    quick = SLOW.replace("time.sleep(60)", "time.sleep(0)")
    path = _file(tmp_path / "wf", "quick.yaml", quick)
    first = await _interrupted_run(store, path)
    second = await _interrupted_run(store, path)
    config = Config()
    config.approval = Policy(defaults={"execute": "auto"})
    core = build_core(store, scripted("ok"), tmp_path, config=config)
    app = build_app(store, None, tmp_path, core=core)
    async with app.run_test() as pilot:
        screen = await ready(pilot)
        await wait_until(pilot, lambda: any("2 runs were interrupted" in str(n.message)
                                            for n in app.shown_notifications), "the notice")
        notice = next(str(n.message) for n in app.shown_notifications if "interrupted" in str(n.message))
        assert first in notice and second in notice and "Resume interrupted runs" in notice
        assert screen.prompt.has_focus  # a notice: the prompt keeps the keys

        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        commands = app.screen.query_one(CommandList)
        await type_text(pilot, "interrupted")

        def found() -> bool:
            option = commands.highlighted_option
            return option is not None and option.hit.text == "Resume interrupted runs"

        await wait_until(pilot, found, "the palette to find the command")
        await pilot.press("enter")
        await wait_until(pilot, lambda: all(r in core.runs.active for r in (first, second)), "both runs resumed")
        for run_id in (first, second):
            result = await asyncio.wait_for(core.runs.wait(run_id), 30)
            assert result is not None and result.ok, result
        assert await core.runs.interrupted() == []
