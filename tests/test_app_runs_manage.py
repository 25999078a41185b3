"""Runs you can manage, in the app (issue 14): an LLM task's tokens, tok/s and time; `R` reruns
with the same variables; `D` deletes a run with its artifacts; the detail pane follows a streaming
reply with one scrollbar; a cancelled run's unstarted tasks read as cancelled.

The launch form: keys typed in a burst after ``ctrl+u`` are all kept, path values are trimmed.

The real app over a real core and store, a scripted model; waits are on what the screen shows."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from test_app_workflows import move_to, open_tree
from test_app_workflows import setup as setup_copy
from textual import events
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Input
from tui.harness import SIZE, build_app, build_core, notifications, ready, store_fixture, wait_until  # noqa: F401

from smoltui.app import SmolApp
from smoltui.backends.scripted import ScriptedBackend
from smoltui.config import Config
from smoltui.core import Core
from smoltui.orchestrator.approval import Policy
from smoltui.orchestrator.store import Store
from smoltui.screens.dialogs import ConfirmDialog
from smoltui.screens.launch_dialog import LaunchDialog
from smoltui.screens.run_view import RunScreen

ASK = """\
workflow:
  id: ask
  name: Ask
  variables:
    topic: tea
    note: note.txt
  tasks:
    - id: answer
      type: llm_task
      prompt: "Write about ${topic}"
      outputs: [reply]
    - id: save
      type: tool_call
      tool: write_file
      depends_on: [answer]
      inputs: {path: "${note}", content: "${reply}", overwrite: true}
"""

LONG_REPLY = " ".join(f"line{i} of the reply\n" for i in range(60))


def setup(tmp_path: Path, store: Store, reply: str, delay_s: float = 0.001) -> tuple[SmolApp, Core, Path]:
    backend = ScriptedBackend([reply], delay_s=delay_s)
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "ask.yaml").write_text(ASK)
    config = Config()
    config.approval = Policy(defaults={"write": "auto", "execute": "auto"})
    core = build_core(store, backend, tmp_path, config=config, project_dir=tmp_path)
    return build_app(store, None, tmp_path, core=core), core, folder


async def launched(pilot, app: SmolApp, core: Core, folder: Path, variables: dict | None = None) -> RunScreen:
    """Launch ask.yaml once the app is ready, and open its run view."""
    await ready(pilot)
    run_id = await core.runs.launch(folder / "ask.yaml", variables)
    await app.push_screen(RunScreen(core, run_id))
    screen = app.screen
    assert isinstance(screen, RunScreen)
    await wait_until(pilot, lambda: screen.loaded is not None and screen.table.row_count == 2, "the run")
    return screen


def plain(widget: Widget) -> str:
    """What a Static shows, as text."""
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(widget.content)  # type: ignore[attr-defined]
    return console.file.getvalue()  # type: ignore[attr-defined]


def scrollbars(screen: RunScreen) -> list[str]:
    """The scrollbars showing in the run's main area (the task table and the detail)."""
    shown = []
    for widget in [screen.table, *screen.query_one("#run-main").query("*")]:
        if isinstance(widget, Widget) and widget.display:
            if widget.show_vertical_scrollbar:
                shown.append(f"{widget.id or type(widget).__name__}:vertical")
            if widget.show_horizontal_scrollbar:
                shown.append(f"{widget.id or type(widget).__name__}:horizontal")
    return shown


async def test_the_detail_follows_a_streaming_reply_with_one_scrollbar(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store, LONG_REPLY, delay_s=0.01)
    async with app.run_test(size=SIZE) as pilot:
        screen = await launched(pilot, app, core, folder)
        detail = screen.query_one("#detail-scroll", VerticalScroll)
        await wait_until(pilot, lambda: detail.max_scroll_y > 5, "the reply to outgrow the pane", timeout=10)
        # It keeps following: each time the reply grows past the pane, the pane scrolls to its end.
        for lines in (10, 20):
            await wait_until(pilot, lambda lines=lines: detail.max_scroll_y > lines
                             and detail.scroll_y >= detail.max_scroll_y - 1, f"the pane to follow past {lines}")
        assert scrollbars(screen) == ["detail-scroll:vertical"]
        assert "tok/s" in plain(screen.live_view)  # the pace while it streams
        await wait_until(pilot, lambda: screen.loaded.state == "succeeded", "the run to end", timeout=20)
        assert scrollbars(screen) == ["detail-scroll:vertical"]
        # Scrolled up by the user, the pane stays where they put it.
        detail.scroll_home(animate=False)
        await pilot.pause()
        assert detail.scroll_y == 0


async def test_an_llm_task_shows_tokens_speed_and_time(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store, "Tea is a drink made from leaves.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await launched(pilot, app, core, folder)
        await wait_until(pilot, lambda: screen.loaded.state == "succeeded", "the run to end", timeout=10)
        screen.table.move_cursor(row=0)
        await wait_until(pilot, lambda: screen.selected == "answer", "the LLM task")
        detail = plain(screen.detail)
        assert "model: 7 tokens · " in detail and " tok/s · " in detail and "prompt " in detail
        assert screen.table.get_row("answer")[-1].endswith("s")  # its elapsed time


async def test_rerun_opens_a_new_run_with_the_same_variables(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store, "Green tea.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await launched(pilot, app, core, folder, {"topic": "coffee", "note": "coffee.txt"})
        first = screen.run_id
        await wait_until(pilot, lambda: screen.loaded.state == "succeeded", "the run to end", timeout=10)
        await pilot.press("R")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_id != first,
                         "the new run's view")
        second = app.screen
        assert isinstance(second, RunScreen)
        await wait_until(pilot, lambda: second.loaded is not None and second.loaded.state == "succeeded",
                         "the new run to end", timeout=10)
        assert second.loaded.record.variables == {"topic": "coffee", "note": "coffee.txt"}
        assert backend_prompts(core)[-1] == "Write about coffee"
        await pilot.press("escape")  # back where the user was, not to the old run's view
        assert not isinstance(app.screen, RunScreen)


def backend_prompts(core: Core) -> list[str]:
    backend = core.model.backend
    assert isinstance(backend, ScriptedBackend)
    return [messages[-1].content for messages in backend.prompts]


async def test_delete_asks_then_removes_the_run_and_its_artifacts(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store, "Tea.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await launched(pilot, app, core, folder)
        run_id = screen.run_id
        await wait_until(pilot, lambda: screen.loaded.state == "succeeded", "the run to end", timeout=10)
        artifacts = core.run_store.artifacts_dir(run_id)
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "chart.png").write_bytes(b"png")
        await pilot.press("D")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("n")  # kept
        await wait_until(pilot, lambda: app.screen is screen, "the run view")
        assert await core.run_store.find_run(run_id) is not None
        await pilot.press("D")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await wait_until(pilot, lambda: not isinstance(app.screen, RunScreen | ConfirmDialog), "the view to close")
        assert await core.run_store.find_run(run_id) is None
        assert not (core.run_store.runs_dir / run_id).exists()


async def test_a_cancelled_runs_unstarted_tasks_show_as_cancelled(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store, LONG_REPLY, delay_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await launched(pilot, app, core, folder)
        await wait_until(pilot, lambda: screen.task_state("answer") == "running", "the LLM task to run")
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await wait_until(pilot, lambda: screen.loaded.state == "cancelled", "the run to be cancelled", timeout=10)
        await wait_until(pilot, lambda: screen.task_state("save") == "cancelled", "the unstarted task")
        assert screen.task_state("answer") == "cancelled"
        assert "cancelled" in str(screen.table.get_row("save")[2])


# -- the launch form -------------------------------------------------------------------------------


async def open_form(pilot, app: SmolApp) -> LaunchDialog:
    _, tree = await open_tree(pilot, app)
    await move_to(pilot, tree, "Copy a note")
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog), "the launch form")
    return app.screen  # type: ignore[return-value]


async def test_form_fields_never_drop_keys_typed_right_after_ctrl_u(store: Store, tmp_path: Path) -> None:
    app, _, _ = setup_copy(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot, app)
        field = form.query_one("#var-source", Input)
        assert app.focused is field and field.value == "in.txt"
        # A burst, as a terminal delivers it in one read: nothing waits between the keys.
        for key in ["ctrl+u", *"other.txt", "ctrl+w", *"notes.md"]:
            app.post_message(events.Key(key, key if len(key) == 1 else None))
        await wait_until(pilot, lambda: field.value == "other.notes.md", "every key typed")


async def test_a_path_value_is_trimmed(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup_copy(tmp_path, store, ask=False)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot, app)
        form.query_one("#var-source", Input).value = " in.txt "  # a slip at both ends
        form.query_one("#var-target", Input).value = "copy.txt  "
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), "the run view")
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded and screen.loaded.state == "succeeded", "the run", timeout=10)
        assert screen.loaded.record.variables["source"] == "in.txt"
        assert (folder / "copy.txt").read_text() == "hello "


# -- editing a workflow --------------------------------------------------------------------------


async def test_e_edits_the_workflow_in_the_editor_and_the_tree_checks_it_again(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _, folder = setup_copy(tmp_path, store)
    editor = tmp_path / "editor.py"  # a real program in $EDITOR's place: it swaps one word in the file
    editor.write_text("import pathlib, sys\np = pathlib.Path(sys.argv[-1])\n"
                      "p.write_text(p.read_text().replace(sys.argv[1], sys.argv[2]))\n")
    async with app.run_test(size=SIZE) as pilot:
        _, tree = await open_tree(pilot, app)
        await move_to(pilot, tree, "Copy a note")
        monkeypatch.setenv("EDITOR", f"{sys.executable} {editor} read_file raed_file")
        await pilot.press("e")
        await wait_until(pilot, lambda: any("1 problem" in n for n in notifications(app)), "the check's verdict")
        assert "raed_file" in (folder / "copy.yaml").read_text()
        assert any("unknown tool `raed_file`" in n for n in notifications(app))
        await wait_until(pilot, lambda: any("✗" in label and "Copy a note" in label for label in tree.labels()),
                         "the tree to mark it invalid")
        monkeypatch.setenv("EDITOR", f"{sys.executable} {editor} raed_file read_file")
        await pilot.press("e")
        await wait_until(pilot, lambda: any("copy.yaml is valid" in n for n in notifications(app)), "valid again")
