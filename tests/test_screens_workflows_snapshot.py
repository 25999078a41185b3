"""Snapshots of the main screen with its workflow panes (80x24 and wide), the run view, and an
inline approval.

Deterministic by construction: runs, task records and log lines are written with fixed times in
UTC, the run view's clock is fixed, and the approval is a call of the test's own that the gate asks
about.
Update with ``pytest tests/test_screens_workflows_snapshot.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot
from tui.harness import SIZE, WIDE, build_app, build_core, open_store_now, ready, scripted, settle, wait_until

from smoltui.core import Core
from smoltui.orchestrator.approval import ToolCall
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workflow_catalog import WorkflowFolder
from smoltui.screens import run_view, workflow_tree
from smoltui.screens.run_view import RunScreen
from smoltui.tools.base import ToolContext

T0 = 1_780_000_000.0  # a fixed moment (UTC): every time on screen is derived from it

REPORT = """\
workflow:
  id: report
  name: Weekly report
  description: Collects notes and writes a report
  variables: {folder: notes, out: report.md}
  tasks:
    - {id: find, type: tool_call, tool: glob_files, inputs: {pattern: "*.md", path: "${folder}"}, outputs: [files]}
    - {id: summarise, type: llm_task, depends_on: [find], prompt: "Summarise ${files}", outputs: [summary]}
    - {id: save, type: tool_call, tool: write_file, depends_on: [summarise],
       inputs: {path: "${out}", content: "${summary}"}}
"""
BROKEN = "workflow:\n  id: broken\n  tasks:\n    - {id: a, type: tool_call, tool: no_such_tool}\n"


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(run_view, "clock", lambda: T0 + 95)
    # tmp_path differs between runs; the tree would show it.
    monkeypatch.setattr(workflow_tree, "short_path", lambda path, limit=28: "~/project/workflows")
    yield
    monkeypatch.undo()
    time.tzset()


def seeded(tmp_path: Path) -> tuple[Store, Core, str, str]:
    """The store (open), a core over it whose only workflow folder holds REPORT and BROKEN, and two
    finished runs of REPORT (one succeeded, one failed) with their tasks and log lines."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "report.yaml").write_text(REPORT)
    (folder / "broken.yaml").write_text(BROKEN)
    store = open_store_now(tmp_path / "smoltui.db")
    core = build_core(store, scripted("unused"), tmp_path, project_dir=tmp_path)
    # The project folder only: the user's own (empty) folder would add a row to every tree.
    core.catalog.folders = [WorkflowFolder("project", folder.resolve())]
    done, failed = asyncio.run(_seed_runs(store, core, str((folder / "report.yaml").resolve())))
    return store, core, done, failed


async def _seed_runs(store: Store, core: Core, file: str) -> tuple[str, str]:
    runs = core.run_store
    done = await runs.create_run("report", name="Weekly report", file=file, variables={"folder": "notes"},
                                 run_id="20260528-0800-done", task_ids=["find", "summarise", "save"])
    failed = await runs.create_run("report", name="Weekly report", file=file, variables={"folder": "notes"},
                                   run_id="20260528-0900-fail", task_ids=["find", "summarise", "save"])
    async with store.batch() as conn:
        for run_id, offset, state in ((done.id, 0, "succeeded"), (failed.id, 3600, "failed")):
            await conn.execute("UPDATE runs SET state = ?, created_at = ?, updated_at = ?, pid = ? WHERE id = ?",
                               (state, T0 + offset, T0 + offset + 42.5, os.getpid(), run_id))
        rows = [
            (done.id, "find", "succeeded", 1, {"files": {"files": ["a.md", "b.md"], "count": 2}}, None, 0, 1.2),
            (done.id, "summarise", "succeeded", 1, {"summary": "- Ship **v2** on Friday\n- Fix the login bug"},
             None, 1.2, 40.0),
            (done.id, "save", "succeeded", 1, {}, None, 40.0, 42.5),
            (failed.id, "find", "succeeded", 1, {"files": {"files": ["a.md"], "count": 1}}, None, 3600, 3601.0),
            (failed.id, "summarise", "failed", 3, None, "timed out after 30s", 3601.0, 3642.5),
            (failed.id, "save", "upstream_failed", 0, None, "upstream task(s) failed: summarise", None, 3642.5),
        ]
        for run_id, task_id, state, attempt, outputs, error, start, end in rows:
            await conn.execute(
                "UPDATE task_runs SET state = ?, attempt = ?, outputs = ?, error = ?, started_at = ?, finished_at = ?,"
                " rendered = ? WHERE run_id = ? AND task_id = ?",
                (state, attempt, json.dumps(outputs) if outputs is not None else None, error,
                 None if start is None else T0 + start, T0 + end,
                 json.dumps({"inputs": {}, "prompt": "Summarise ['a.md']", "system": None})
                 if task_id == "summarise" else json.dumps({"inputs": {"pattern": "*.md", "path": "notes"}})
                 if task_id == "find" else None,
                 run_id, task_id))
        events = [
            (failed.id, None, "run_state", "running", 3600),
            (failed.id, "find", "task_state", "succeeded", 3601),
            (failed.id, "summarise", "log", "attempt 1/3 failed: timed out after 30s; retrying in 1s", 3611),
            (failed.id, "summarise", "task_state", "failed", 3642.5),
            (failed.id, "summarise", "log", "failed: timed out after 30s", 3642.5),
            (failed.id, "save", "task_state", "upstream_failed", 3642.5),
            (failed.id, None, "run_state", "failed", 3642.5),
        ]
        await conn.executemany(
            "INSERT INTO run_events (run_id, task_id, kind, message, created_at) VALUES (?, ?, ?, ?, ?)",
            [(r, t, k, m, T0 + at) for r, t, k, m, at in events])
    return done.id, failed.id


async def _panes_ready(pilot: Pilot) -> None:
    screen = await ready(pilot)
    if not screen.workflow_tree.has_focus:
        await pilot.press("f3")  # shows the tree at 80x24; moves to it on a wide screen
    if not screen.log_pane.display:
        await pilot.press("f4")
    tree = screen.workflow_tree
    await wait_until(pilot, lambda: tree.snapshot is not None, "the tree")
    await wait_until(pilot, lambda: screen.log_pane.buffered_count == 7, "the log lines")
    await settle(pilot)
    # Open the report workflow to show its runs, and leave the cursor on the failed one.
    await pilot.press("down", "space", "down")
    await settle(pilot)
    screen.prompt.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("size", [SIZE, WIDE], ids=["80x24", "140x40"])
def test_main_screen_with_workflow_panes(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    store, core, _, _ = seeded(tmp_path)
    try:
        app = build_app(store, None, tmp_path, core=core)
        assert snap_compare(app, terminal_size=size, run_before=_panes_ready)
    finally:
        asyncio.run(store.close())


def test_run_view_of_a_failed_run(snap_compare, tmp_path: Path) -> None:
    store, core, _, failed = seeded(tmp_path)

    async def open_run(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.app.push_screen(RunScreen(core, failed))
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.loaded is not None and screen.tasks and screen.table.row_count == 3,
                         "the run")
        await settle(pilot)
        await pilot.press("down")  # the failed task: its prompt, attempts and error
        await wait_until(pilot, lambda: screen.selected == "summarise", "the failed task")
        await wait_until(pilot, lambda: screen.log_pane.buffered_count == 7, "the log lines")
        await settle(pilot)
        await pilot.pause()

    try:
        app = build_app(store, None, tmp_path, core=core)
        assert snap_compare(app, terminal_size=SIZE, run_before=open_run)
    finally:
        asyncio.run(store.close())


def test_inline_approval_in_the_run_view(snap_compare, tmp_path: Path) -> None:
    store, core, _, _ = seeded(tmp_path)
    file = str((tmp_path / "workflows" / "report.yaml").resolve())

    async def live_run() -> str:
        live = await core.run_store.create_run("report", name="Weekly report", file=file,
                                               run_id="20260528-1000-live", task_ids=["find", "summarise", "save"])
        async with store.batch() as conn:
            await conn.execute("UPDATE runs SET state = 'running', created_at = ?, updated_at = ?, pid = ? WHERE id = ?",
                               (T0, T0 + 60, os.getpid(), live.id))
            await conn.execute("UPDATE task_runs SET state = 'succeeded', attempt = 1, started_at = ?, finished_at = ?"
                               " WHERE run_id = ? AND task_id IN ('find', 'summarise')", (T0, T0 + 50, live.id))
            await conn.execute("UPDATE task_runs SET state = 'running', attempt = 1, started_at = ? WHERE run_id = ?"
                               " AND task_id = 'save'", (T0 + 60, live.id))
        return live.id

    live = asyncio.run(live_run())

    async def pending_call(pilot: Pilot) -> None:
        await ready(pilot)
        # The save task's call, asked about by the gate (the policy asks before a write); nothing
        # answers it before the snapshot.
        call = ToolCall("call-1", "write_file", {"path": "report.md", "content": "# Weekly report\n\n- Ship v2",
                                                 "overwrite": True}, run_id=live, task_id="save")
        ctx = ToolContext(workspace=tmp_path, artifacts_dir=tmp_path / "artifacts", run_id=live, task_id="save")
        asking = asyncio.create_task(core.gate.run(call, ctx))
        await wait_until(pilot, lambda: core.gate.is_waiting(call.id) or asking.done(), "the gate to ask")
        await pilot.app.push_screen(RunScreen(core, live, focus_call=call.id))  # what ctrl+g does
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.loaded is not None and screen.cards, "the card")
        await wait_until(pilot, lambda: screen.cards[call.id].has_focus, "the card to be selected")
        pilot.app.clear_notifications()  # the toast that announced the call (the snapshot is of the view)
        await settle(pilot)
        await pilot.pause()

    try:
        app = build_app(store, None, tmp_path, core=core)
        assert snap_compare(app, terminal_size=SIZE, run_before=pending_call)
    finally:
        asyncio.run(store.close())
