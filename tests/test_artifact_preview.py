"""Artifacts you can see: ``o`` previews a run task's output (an image, a table, Markdown) or a file a
chat's tool produced, full screen, and escape comes back; ``O`` hands the file to the system's opener.

Real pieces: a workflow on disk run by the real scheduler (load_data writes a Parquet table, the
chart tool a PNG, the scripted model a Markdown reply), the real app under Pilot, a real opener
process that records what it was given.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import DataTable, Markdown, Static, TextArea
from tui.harness import SIZE, build_app, build_core, ready, scripted, settle, store_fixture, wait_until  # noqa: F401

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from smoltui.orchestrator.states import RunState  # noqa: E402
from smoltui.orchestrator.store import Store  # noqa: E402
from smoltui.screens import preview  # noqa: E402
from smoltui.screens.preview import ImageWidget, Previewable, PreviewScreen  # noqa: E402
from smoltui.screens.run_view import RunScreen  # noqa: E402
from smoltui.screens.tool_call_view import ToolCallView  # noqa: E402
from smoltui.screens.tool_picker import ToolPickerDialog  # noqa: E402
from smoltui.tools.base import ToolContext, ToolResult, tool  # noqa: E402
from smoltui.tools.builtins import builtin_tools  # noqa: E402
from smoltui.tools.chart import chart  # noqa: E402
from smoltui.tools.data import load_data  # noqa: E402

REPORT = "# Weekly sales\n\n- north is **up**\n- south is flat\n"
WORKFLOW = """\
workflow:
  id: artifacts
  name: Sales artifacts
  tasks:
    - id: table
      type: tool_call
      tool: load_data
      inputs: {path: sales.csv}
      outputs: [sales]
    - id: plot
      type: tool_call
      tool: chart
      depends_on: [table]
      inputs: {artifact: "${sales}", x: date, y: [north, south], kind: bar}
      outputs: [image]
    - id: report
      type: llm_task
      depends_on: [table]
      prompt: "Write the report"
      outputs: [summary]
"""


def sales_csv(folder: Path, rows: int = 30) -> Path:
    days = pd.date_range("2024-01-01", periods=rows, freq="D").strftime("%Y-%m-%d")
    path = folder / "sales.csv"
    pd.DataFrame({"date": days, "north": range(rows), "south": range(rows, 2 * rows)}).to_csv(path, index=False)
    return path


def plain(renderable) -> str:  # noqa: ANN001
    console = Console(width=100, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def recording_opener(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for xdg-open: a real program that writes the arguments it got to a file."""
    record = tmp_path / "opened.txt"
    script = tmp_path / "fake-open"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}.part" && mv "{record}.part" "{record}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


async def finished_run(pilot, app, core, tmp_path: Path) -> RunScreen:  # noqa: ANN001
    """Run the workflow to the end and open its run view."""
    await ready(pilot)
    run_id = await core.runs.launch(tmp_path / "workflows" / "artifacts.yaml")
    await wait_until(pilot, lambda: not core.runs.is_running(run_id), "the run to finish", timeout=30)
    record = await core.run_store.get_run(run_id)
    assert record.state == RunState.SUCCEEDED, await core.run_store.task_records(run_id)
    await app.push_screen(RunScreen(core, run_id))
    screen = app.screen
    assert isinstance(screen, RunScreen)
    await wait_until(pilot, lambda: screen.loaded is not None and screen.table.row_count == 3, "the run view")
    return screen


async def select(pilot, screen: RunScreen, task_id: str) -> None:  # noqa: ANN001
    ids = [str(k.value) for k in screen.table.rows]
    screen.table.focus()
    screen.table.move_cursor(row=ids.index(task_id))
    await wait_until(pilot, lambda: screen.selected == task_id and screen.selected_output() is not None,
                     f"{task_id} selected with its output read")


async def preview_of(pilot, app) -> PreviewScreen:  # noqa: ANN001
    await pilot.press("o")
    await wait_until(pilot, lambda: isinstance(app.screen, PreviewScreen), "the preview")
    shown = app.screen
    await wait_until(pilot, lambda: shown.kind != "loading", "the preview to load")
    return shown


def setup(store: Store, tmp_path: Path):  # noqa: ANN201
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "artifacts.yaml").write_text(WORKFLOW)
    sales_csv(folder)
    core = build_core(store, scripted(REPORT), tmp_path, project_dir=tmp_path)
    return build_app(store, None, tmp_path, core=core), core


async def test_o_previews_each_task_output_and_escape_comes_back(store: Store, tmp_path: Path) -> None:
    app, core = setup(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await finished_run(pilot, app, core, tmp_path)

        await select(pilot, screen, "table")
        assert "o preview · O open" in plain(screen.describe_task("table"))  # the detail pane tells the keys
        shown = await preview_of(pilot, app)
        assert shown.kind == "table"
        table = shown.query_one("#preview-table", DataTable)
        assert table.row_count == 30 and [str(c.label) for c in table.columns.values()] == ["date", "north", "south"]
        assert "30 rows × 3 columns" in str(shown.title_label.render())
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, "the run view again")

        await select(pilot, screen, "plot")
        shown = await preview_of(pilot, app)
        assert shown.kind == "image" and shown.query(ImageWidget)
        assert ".png" in str(shown.title_label.render()) and "800×450 px" in str(shown.title_label.render())
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, "the run view again")

        await select(pilot, screen, "report")
        shown = await preview_of(pilot, app)
        assert shown.kind == "markdown"
        markdown = shown.query_one("#preview-markdown", Markdown)
        await wait_until(pilot, lambda: markdown.query("MarkdownH1"), "the Markdown rendered")
        assert "Weekly sales" in str(markdown.query_one("MarkdownH1").render())
        assert len(markdown.query("MarkdownBulletList MarkdownBullet")) == 2  # a list, not a paragraph of dashes
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, "the run view again")


async def test_O_hands_the_output_file_to_the_system_opener(store: Store, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    script, record = recording_opener(tmp_path)
    monkeypatch.setattr(preview, "OPENERS", (str(script),))
    app, core = setup(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await finished_run(pilot, app, core, tmp_path)
        await select(pilot, screen, "plot")
        await pilot.press("O")
        await wait_until(pilot, record.exists, "the opener to run")
        opened = Path(record.read_text().strip())
        assert opened.suffix == ".png" and opened.is_file() and opened.parent == core.run_store.artifacts_dir(screen.run_id)
        # A table has no file of its own to hand over: it is written out as CSV, which spreadsheets open.
        record.unlink()
        await select(pilot, screen, "table")
        await pilot.press("O")
        await wait_until(pilot, record.exists, "the opener to run for the table")
        exported = Path(record.read_text().strip())
        assert exported.suffix == ".csv" and len(pd.read_csv(exported)) == 30


async def test_with_no_opener_and_no_editor_O_says_so(store: Store, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview, "OPENERS", ("smoltui-no-such-opener",))
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)
    image = tmp_path / "chart.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await app.push_screen(PreviewScreen(Previewable("chart.png", path=image)))
        shown = app.screen
        await wait_until(pilot, lambda: shown.kind != "loading", "the preview")
        assert shown.kind == "unknown"  # a PNG header and nothing else: said, not a traceback
        await pilot.press("O")
        await wait_until(pilot, lambda: any("no smoltui-no-such-opener" in str(n.message)
                                            for n in app.shown_notifications), "the refusal")
        assert any(str(image) in str(n.message) for n in app.shown_notifications)  # where the file is


@tool(risk="read")
def sales_chart(*, ctx: ToolContext) -> ToolResult:
    """Chart the sales table (the real load_data and chart tools, in the chat's artifact folder)."""
    table = load_data.func("sales.csv", ctx=ctx).content["artifact"]
    return chart.func(artifact=table, x="date", y=["north", "south"], kind="bar", title=None,
                      xlabel=None, ylabel=None, ctx=ctx)


async def test_o_on_a_chat_tool_line_previews_the_image_it_produced(store: Store, tmp_path: Path) -> None:
    from smoltui.config import Config
    from smoltui.orchestrator.approval import Policy

    sales_csv(tmp_path)
    config = Config()
    config.approval = Policy()
    reply = '<tool_call>\n{"name": "sales_chart", "arguments": {}}\n</tool_call>'
    app = build_app(store, scripted(reply, "Here is the chart."), tmp_path, config=config,
                    tools=[*builtin_tools(), sales_chart], think=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("f5")  # the tool picker: switch the chart tool on for this chat
        await wait_until(pilot, lambda: isinstance(app.screen, ToolPickerDialog), "the tool picker")
        app.screen.query_one("#tool-list").select("sales_chart")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.session_tools == ["sales_chart"], "the tool to be on")
        screen.prompt.load_text("chart the sales")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.query(ToolCallView) and screen.query_one(ToolCallView).ok is not None,
                         "the tool call to end", timeout=20)
        await wait_until(pilot, lambda: not screen.replying, "the reply to end", timeout=20)
        view = screen.query_one(ToolCallView)
        assert view.ok, view.text
        assert view.files and view.files[0].suffix == ".png" and view.can_focus
        assert "o preview · O open" in view.text
        view.focus()
        await pilot.pause()
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, PreviewScreen), "the preview")
        shown = app.screen
        await wait_until(pilot, lambda: shown.kind != "loading", "the image")
        assert shown.kind == "image" and shown.query(ImageWidget)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, "the chat again")


async def test_text_json_and_binary_files_are_said_for_what_they_are(store: Store, tmp_path: Path) -> None:
    (tmp_path / "notes.py").write_text("print('hi')\n")
    (tmp_path / "blob.bin").write_bytes(b"PK\x03\x04" + bytes(range(256)))
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for item, kind in ((Previewable("notes.py", path=tmp_path / "notes.py"), "text"),
                           (Previewable("task.result", value={"a": [1, 2]}), "text"),
                           (Previewable("blob.bin", path=tmp_path / "blob.bin"), "binary"),
                           (Previewable("gone.md", path=tmp_path / "gone.md"), "missing")):
            await app.push_screen(PreviewScreen(item))
            shown = app.screen
            await wait_until(pilot, lambda s=shown: s.kind != "loading", f"the preview of {item.name}")
            assert shown.kind == kind, item
            if kind == "text":
                assert shown.query_one("#preview-text", TextArea).read_only
            if kind == "binary":
                assert "zip archive" in str(shown.query_one("#preview-message", Static).render())
            await pilot.press("escape")
            await wait_until(pilot, lambda s=shown: app.screen is not s, "back")
