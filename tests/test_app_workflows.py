"""The workflow side of the TUI, driven by keys: the tree, the launch form, the run view, inline
approvals, cancel, retry and resume.

Real pieces throughout: workflow files on disk, the real scheduler and approval gate, built-in tools
writing real files, SQLite in tmp_path; the chat model is the scripted backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Label, TextArea
from tui.harness import (  # noqa: F401
    SIZE,
    WIDE,
    build_app,
    build_core,
    ready,
    scripted,
    store_fixture,
    wait_until,
)

from smoltui.app import SmolApp
from smoltui.config import Config
from smoltui.core import Core
from smoltui.orchestrator.approval import Policy
from smoltui.orchestrator.store import Store
from smoltui.screens.chat import ChatScreen
from smoltui.screens.dialogs import ConfirmDialog
from smoltui.screens.edit_arguments import EditArgumentsDialog
from smoltui.screens.launch_dialog import LaunchDialog, parse_field, show_value
from smoltui.screens.run_view import RunScreen

COPY = """\
workflow:
  id: copy
  name: Copy a note
  description: Reads a note and writes a copy
  variables:
    source: in.txt
    target: out.txt
    times: 1
  tasks:
    - id: read
      type: tool_call
      tool: read_file
      inputs: {path: "${source}"}
      outputs: [text]
    - id: write
      type: tool_call
      tool: write_file
      depends_on: [read]
      inputs: {path: "${target}", content: "${text['content'] * times}"}
"""

SLOW = """\
workflow:
  id: slow
  name: Slow
  tasks:
    - id: wait
      type: tool_call
      tool: python
      timeout: 60
      inputs: {code: "import time; time.sleep(30)"}
"""

BROKEN = "workflow:\n  id: broken\n  tasks:\n    - id: a\n      type: tool_call\n      tool: no_such_tool\n"


def setup(tmp_path: Path, store: Store, *, ask: bool = True) -> tuple[SmolApp, Core, Path]:
    """The app over a core whose project folder (``tmp_path``) holds the workflows; writes ask
    (``ask``) or run, everything else runs."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "copy.yaml").write_text(COPY)
    (folder / "slow.yaml").write_text(SLOW)
    (folder / "broken.yaml").write_text(BROKEN)
    (folder / "in.txt").write_text("hello ")
    config = Config()
    config.approval = Policy(defaults={"write": "ask" if ask else "auto", "execute": "auto"})
    core = build_core(store, scripted("ok"), tmp_path, config=config, project_dir=tmp_path)
    return build_app(store, None, tmp_path, core=core), core, folder


async def open_tree(pilot, app: SmolApp):
    screen = await ready(pilot)
    assert isinstance(screen, ChatScreen)
    if not screen.workflow_tree.has_focus:
        await pilot.press("f3")  # shows the tree, or moves to it when it is shown
    tree = screen.workflow_tree
    await wait_until(pilot, lambda: tree.snapshot is not None, "the workflow tree")
    await pilot.pause()
    assert tree.has_focus
    return screen, tree


async def move_to(pilot, tree, title: str) -> None:
    for _ in range(40):
        node = tree.cursor_node
        if node is not None and title in str(node.label):
            return
        await pilot.press("down")
    raise AssertionError(f"no tree node {title!r}")


async def launch(pilot, app: SmolApp, title: str, edits: dict[str, str] | None = None) -> RunScreen:
    _, tree = await open_tree(pilot, app)
    await move_to(pilot, tree, title)
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog), "the launch form")
    dialog = app.screen
    for name, value in (edits or {}).items():
        field = dialog.query_one(f"#var-{name}")
        field.value = value
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), "the run view")
    return app.screen


def task_state(screen: RunScreen, task_id: str) -> str:
    return screen.task_state(task_id)


async def test_launch_form_validates_then_runs_and_approve_once(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        _, tree = await open_tree(pilot, app)
        # The broken file shows its problem on its node and cannot be launched.
        await move_to(pilot, tree, "broken")
        await pilot.press("space")
        await pilot.pause()
        assert any("no_such_tool" in str(n.label) for n in tree.cursor_node.children)
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, LaunchDialog)
        await move_to(pilot, tree, "Copy a note")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog), "the launch form")
        dialog = app.screen
        assert dialog.query_one("#var-source").value == "in.txt"  # defaults filled in
        dialog.query_one("#var-times").value = "twice"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, LaunchDialog)  # not a number: the form stays, saying so
        assert "expects a whole number" in str(dialog.query_one("#err-times").render())
        dialog.query_one("#var-times").value = "2"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), "the run view")
        screen = app.screen
        await wait_until(pilot, lambda: screen.cards, "the approval card")
        card = next(iter(screen.cards.values()))
        assert not card.has_focus  # the card waits for the user to come to it
        assert card.request.call.tool == "write_file"
        await wait_until(pilot, lambda: task_state(screen, "write") == "awaiting approval", "awaiting approval")
        await wait_until(pilot, lambda: app.pending_approvals == 1, "the approval count")
        # Back on the main screen the status bar counts it; ctrl+g goes back to the card.
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the main screen")
        status = app.screen.status
        assert "1 waiting" in str(status.query_one("#sb-approvals", Label).render())
        assert status.has_class("-approvals")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.cards, "the run view")
        screen = app.screen
        await wait_until(pilot, lambda: next(iter(screen.cards.values())).has_focus, "the card's focus")
        await pilot.press("y")
        await wait_until(pilot, lambda: screen.loaded and screen.loaded.state == "succeeded", "the run to succeed")
        assert (folder / "out.txt").read_text() == "hello hello "
        assert app.pending_approvals == 0
        run = (await core.run_store.list_runs())[0]
        assert run.variables["times"] == 2


async def test_deny_fails_the_task_and_nothing_is_written(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await launch(pilot, app, "Copy a note")
        await wait_until(pilot, lambda: screen.cards, "the approval card")
        await pilot.press("ctrl+g", "n")
        await wait_until(pilot, lambda: screen.loaded and screen.loaded.state == "failed", "the run to fail")
        assert not (folder / "out.txt").exists()
        assert "denied" in screen.loaded.tasks["write"].error


async def test_edit_arguments_then_approve(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await launch(pilot, app, "Copy a note")
        await wait_until(pilot, lambda: screen.cards, "the approval card")
        await pilot.press("ctrl+g", "e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditArgumentsDialog), "the edit dialog")
        editor = app.screen.query_one(TextArea)
        arguments = json.loads(editor.text)
        editor.load_text(json.dumps({**arguments, "path": 42}))
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, EditArgumentsDialog)  # the schema says path is a string
        editor.load_text(json.dumps({**arguments, "path": "edited.txt"}))
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.loaded and screen.loaded.state == "succeeded", "the run to succeed")
        assert (folder / "edited.txt").read_text() == "hello "
        assert not (folder / "out.txt").exists()


async def test_cancel_then_resume(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await launch(pilot, app, "Slow")
        await wait_until(pilot, lambda: task_state(screen, "wait") == "running", "the task to run", timeout=10)
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await wait_until(pilot, lambda: screen.loaded.state == "cancelled", "the run to be cancelled", timeout=10)
        assert screen.loaded.tasks["wait"].state == "cancelled"
        (folder / "slow.yaml").write_text(SLOW.replace("time.sleep(30)", "print('ok')"))
        await pilot.press("u")
        await wait_until(pilot, lambda: screen.loaded.state == "succeeded", "the resumed run", timeout=15)


async def test_retry_a_failed_task(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store, ask=False)
    (folder / "in.txt").unlink()
    async with app.run_test(size=SIZE) as pilot:
        screen = await launch(pilot, app, "Copy a note")
        await wait_until(pilot, lambda: screen.loaded and screen.loaded.state == "failed", "the run to fail")
        assert task_state(screen, "read") == "failed" and task_state(screen, "write") == "upstream_failed"
        table = screen.query_one(DataTable)
        table.focus()
        table.move_cursor(row=0)
        await pilot.pause()
        assert "no such file" in str(screen.describe_task("read").renderables).lower() or screen.loaded.tasks["read"].error
        (folder / "in.txt").write_text("back ")
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.loaded.state == "succeeded", "the retried run", timeout=10)
        assert (folder / "out.txt").read_text() == "back "
        assert screen.loaded.tasks["read"].attempt == 1


async def test_several_runs_at_once_and_the_tree_shows_them(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=WIDE) as pilot:
        first = await launch(pilot, app, "Slow")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the main screen")
        second = await launch(pilot, app, "Slow")
        assert first.run_id != second.run_id
        assert core.runs.is_running(first.run_id) and core.runs.is_running(second.run_id)
        await pilot.press("escape")
        screen = app.screen
        tree = screen.workflow_tree
        await wait_until(pilot, lambda: sum("running" in label for label in tree.labels()) == 2,
                         "two running runs in the tree", timeout=10)
        await core.runs.shutdown()


def test_launch_form_values_are_typed_like_their_defaults() -> None:
    assert parse_field("3", 1) == 3 and parse_field("2", 0.5) == 2.0
    assert parse_field("[a, b]", ["x"]) == ["a", "b"] and parse_field("yes", True) is True
    assert parse_field("any text: here", "x") == "any text: here"
    with pytest.raises(ValueError, match="a whole number"):
        parse_field("true", 1)
    with pytest.raises(ValueError, match="a list"):
        parse_field("5", [1])
    assert show_value([1, 2]) == "[1, 2]" and show_value(True) == "true" and show_value("s") == "s"


async def test_panes_toggle_and_resize_by_key(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        tree, logs = screen.workflow_tree, screen.log_pane
        assert not tree.display and not logs.display  # 80x24: the chat keeps the room
        await pilot.press("f3", "f4")
        await pilot.pause()
        assert tree.display and logs.display and tree.has_focus
        width, height = tree.outer_size.width, logs.outer_size.height
        await pilot.press("alt+right", "alt+up")
        await pilot.pause()
        assert tree.outer_size.width == width + 4 and logs.outer_size.height == height + 2
        await pilot.press("alt+left", "alt+left", "alt+down")
        await pilot.pause()
        assert tree.outer_size.width == width - 4 and logs.outer_size.height == height
        await pilot.press("f3")  # focused: hides it, and the message box gets the keys back
        await pilot.pause()
        assert not tree.display and screen.prompt.has_focus
    wide = build_app(store, None, tmp_path, core=core)
    async with wide.run_test(size=WIDE) as pilot:
        screen = await ready(pilot)
        assert screen.workflow_tree.display and screen.log_pane.display  # a wide terminal shows all


async def test_the_tree_follows_file_changes(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=WIDE) as pilot:
        screen = await ready(pilot)
        tree = screen.workflow_tree
        await wait_until(pilot, lambda: tree.snapshot is not None, "the tree")
        labels = lambda: " | ".join(tree.labels())  # noqa: E731
        assert "Fresh one" not in labels()
        watcher = app.core.watcher
        await watcher.check()  # the files as they are (the app's own watcher may have looked already)
        # An editor writes the files; the watcher notices (now, rather than within its second).
        (folder / "fresh.yaml").write_text(COPY.replace("Copy a note", "Fresh one"))
        await watcher.check()
        await wait_until(pilot, lambda: "Fresh one" in labels(), "the new file in the tree")
        (folder / "fresh.yaml").write_text(COPY.replace("read_file", "raed_file").replace("Copy a note", "Fresh one"))
        await watcher.check()
        await wait_until(pilot, lambda: "✗ Fresh one  1 problem" in labels(), "its problem")
        (folder / "fresh.yaml").unlink()
        await watcher.check()
        await wait_until(pilot, lambda: "Fresh one" not in labels(), "the file gone from the tree")


async def test_the_planner_opens_from_its_key_and_the_palette(store: Store, tmp_path: Path) -> None:
    from smoltui.screens.plan_dialog import PlanDialog

    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert any(c.title == "Plan a workflow" for c in app.get_system_commands(app.screen))
        await pilot.press("f9")
        await wait_until(pilot, lambda: isinstance(app.screen, PlanDialog), "the planner")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, PlanDialog), "the planner to close")


async def test_the_launch_form_and_planner_look_the_same_after_another_dialog(store: Store, tmp_path: Path) -> None:
    # Screen stylesheets stay loaded once used: the small dialogs' shared rules must not reshape the
    # launch form or the planner after one of those dialogs (here the tool picker) has been open.
    from smoltui.screens.plan_dialog import PlanDialog
    from smoltui.screens.tool_picker import ToolPickerDialog

    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)

        async def shapes() -> list[tuple[object, ...]]:
            seen = []
            for key, kind in (("enter", LaunchDialog), ("f9", PlanDialog)):
                if kind is LaunchDialog:
                    _, tree = await open_tree(pilot, app)
                    await move_to(pilot, tree, "Copy a note")
                await pilot.press(key)
                await wait_until(pilot, lambda kind=kind: isinstance(app.screen, kind), kind.__name__)
                await pilot.pause()
                box = app.screen.query_one(".dialog-box")
                title = app.screen.query_one(".dialog-title")
                seen.append((kind.__name__, box.region, box.styles.border_top[0], title.region))
                await pilot.press("escape")
                await wait_until(pilot, lambda: app.screen is screen, "the chat screen again")
            return seen

        fresh = await shapes()
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, ToolPickerDialog), "the tool picker")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, "the chat screen again")
        assert await shapes() == fresh
        assert fresh[0][1].width == 76 and fresh[0][2] == "round"  # launch_dialog.tcss: wide, compact rows


async def test_a_run_whose_process_dies_shows_as_interrupted_in_the_tree(store: Store, tmp_path: Path) -> None:
    # A run started by another smoltui process (a headless `smoltui run`) that is killed changes no
    # row in the store; the tree must still stop calling it running.
    import subprocess
    import sys

    app, core, folder = setup(tmp_path, store)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = await core.run_store.create_run("copy", name="Copy a note", file=str((folder / "copy.yaml").resolve()),
                                              task_ids=["read", "write"])
        async with store.batch() as conn:
            await conn.execute("UPDATE runs SET state = 'running', pid = ? WHERE id = ?", (other.pid, run.id))
        async with app.run_test(size=WIDE) as pilot:
            screen = await ready(pilot)
            tree = screen.workflow_tree
            await wait_until(pilot, lambda: "running" in (tree.run_label(run.id) or ""), "the run, running")
            await app.core.watcher.check()  # it sees whose runs are running (if it has not yet)
            other.kill()
            other.wait()
            await app.core.watcher.check()  # nothing in the store changed: it notices the dead process
            await wait_until(pilot, lambda: "interrupted" in (tree.run_label(run.id) or ""),
                             "the run shown as interrupted")
    finally:
        other.kill()
        other.wait()


async def test_the_run_view_task_table_is_not_cut_at_80_columns(store: Store, tmp_path: Path) -> None:
    # Task ids like the examples' (generate_chart) and an LLM task's time in tens of seconds: the
    # table takes the width its columns need, so the time column is not cut off at its edge.
    import time

    app, core, folder = setup(tmp_path, store)
    run = await core.run_store.create_run("chart", name="Chart", file=str((folder / "copy.yaml").resolve()),
                                          task_ids=["load_data", "generate_chart"])
    now = time.time()
    async with store.batch() as conn:
        await conn.execute("UPDATE runs SET state = 'failed', created_at = ?, updated_at = ? WHERE id = ?",
                           (now - 100, now, run.id))
        await conn.execute("UPDATE task_runs SET state = 'succeeded', attempt = 1, started_at = ?, finished_at = ?"
                           " WHERE run_id = ?", (now - 100, now - 35.5, run.id))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await app.push_screen(RunScreen(core, run.id))
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded is not None and screen.table.row_count >= 2, "the run")
        await pilot.pause()
        table = screen.table
        assert table.get_row("generate_chart")[-1] == "1m04s"
        assert table.virtual_size.width <= table.scrollable_content_region.width, (table.virtual_size, table.region)
        assert table.region.width <= 42  # the detail keeps most of the 80 columns


async def test_at_80_columns_the_chat_list_and_the_tree_take_turns(store: Store, tmp_path: Path) -> None:
    # Side by side at 80 columns they would leave the conversation about 20 columns.
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        tree, sessions, chat = screen.workflow_tree, screen.session_list, screen.query_one("#chat")
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert sessions.display and not tree.display and sessions.options.has_focus
        await pilot.press("f3")
        await pilot.pause()
        assert tree.display and tree.has_focus and not sessions.display
        assert chat.region.width >= 40
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert sessions.display and not tree.display and sessions.options.has_focus
        assert chat.region.width >= 40
        await pilot.press("f3")
        await pilot.pause()
        assert tree.display and not sessions.display
        # Put aside, not shut for good: on a wider terminal both are back.
        await pilot.resize_terminal(*WIDE)
        await pilot.pause()
        assert tree.display and sessions.display
    wide = build_app(store, None, tmp_path, core=core)
    async with wide.run_test(size=WIDE) as pilot:
        screen = await ready(pilot)
        assert screen.workflow_tree.display and screen.session_list.display  # room for both
        await pilot.press("f3", "f3")  # to the tree, then hide it, then show it again
        await pilot.press("f3")
        await pilot.pause()
        assert screen.workflow_tree.display and screen.session_list.display


async def test_cancelling_a_run_that_waits_for_approval_clears_the_count(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await launch(pilot, app, "Copy a note")
        await wait_until(pilot, lambda: screen.cards and app.pending_approvals == 1, "the approval card")
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await wait_until(pilot, lambda: screen.loaded.state == "cancelled", "the run to be cancelled", timeout=10)
        await wait_until(pilot, lambda: not screen.cards, "the card to go")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the main screen")
        await wait_until(pilot, lambda: app.pending_approvals == 0, "the count to drop")
        assert not app.screen.status.has_class("-approvals")
        assert not (folder / "out.txt").exists()


async def test_a_pane_shrunk_by_a_small_window_gets_its_size_back(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        tree, logs = screen.workflow_tree, screen.log_pane
        await pilot.press("f3", "f4")
        await pilot.pause()
        width, height = tree.outer_size.width, logs.outer_size.height
        await pilot.resize_terminal(50, 14)  # for a moment, a very small window
        await pilot.pause()
        assert tree.outer_size.width < width and logs.outer_size.height < height
        await pilot.resize_terminal(*SIZE)
        await pilot.pause()
        assert (tree.outer_size.width, logs.outer_size.height) == (width, height)


def detail_heading(screen: RunScreen) -> str:
    """The first line of the detail pane, as drawn: "<icon> <task id> (<kind>)  <state>"."""
    return screen.detail.render_line(0).text.strip()


@pytest.mark.parametrize("key", ["y", "n"])
async def test_opened_for_an_approval_the_view_shows_its_task_and_stays_there(
    store: Store, tmp_path: Path, key: str
) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await launch(pilot, app, "Copy a note")
        await wait_until(pilot, lambda: screen.cards, "the approval card")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the main screen")
        await pilot.press("ctrl+g")  # as the notification says
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.cards, "the run view")
        screen = app.screen
        card = next(iter(screen.cards.values()))
        await wait_until(pilot, lambda: card.has_focus and screen.table.row_count == 2, "the card and the tasks")
        await pilot.pause()
        assert screen.selected == "write" and detail_heading(screen).split()[1] == "write"
        await pilot.press(key)
        done = "succeeded" if key == "y" else "failed"
        await wait_until(pilot, lambda: screen.loaded and screen.loaded.state == done, f"the run to end {done}")
        await wait_until(pilot, lambda: not screen.cards and screen.table.has_focus, "the card to go")
        await pilot.pause()
        assert screen.selected == "write" and screen.table.cursor_row == 1
        assert detail_heading(screen).split()[1] == "write" and done in detail_heading(screen)


async def test_answering_keeps_the_task_the_user_picked(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await launch(pilot, app, "Copy a note")
        await wait_until(pilot, lambda: screen.cards, "the approval card")
        screen.table.focus()
        await pilot.press("up")  # the user looks at the task that read the note
        await wait_until(pilot, lambda: screen.selected == "read", "the read task")
        await pilot.press("a")  # to the card
        await wait_until(pilot, lambda: next(iter(screen.cards.values())).has_focus, "the card's focus")
        await pilot.press("y")
        await wait_until(pilot, lambda: screen.loaded and screen.loaded.state == "succeeded", "the run to succeed")
        await wait_until(pilot, lambda: not screen.cards and screen.table.has_focus, "the card to go")
        await pilot.pause()
        assert screen.selected == "read" and screen.table.cursor_row == 0
        assert detail_heading(screen).split()[1] == "read"
