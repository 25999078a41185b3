"""Tool calling in the chat, by keyboard: switch tools on with the picker, approve or deny a call
inline under it, see its result, and find it all again when the chat is reopened."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conftest_tui import SIZE, build_app, ready, scripted, store_fixture, wait_until  # noqa: F401

from smoltui.orchestrator.approval import Policy
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workbench import Workbench
from smoltui.orchestrator.workflow_catalog import WorkflowFolder
from smoltui.screens.approval_card import ApprovalCard
from smoltui.screens.message_view import MessageView
from smoltui.screens.tool_call_view import ToolCallView
from smoltui.screens.tool_picker import ToolPickerDialog
from smoltui.tools.builtins import builtin_tools


def call(name: str, **arguments: object) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def make_app(store: Store, tmp_path: Path, *replies: str, think: bool = True):
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    workbench = Workbench.build(store, tools={t.name: t for t in builtin_tools()}, policy=Policy(),
                                folders=[WorkflowFolder("project", folder)])
    app = build_app(store, scripted(*replies), tmp_path, workbench=workbench, think=think)
    app.service.workspace = tmp_path
    return app


async def switch_on(pilot, app, *names: str) -> None:
    screen = await ready(pilot)
    await pilot.press("f5")
    await wait_until(pilot, lambda: isinstance(app.screen, ToolPickerDialog), "the tool picker")
    picker = app.screen
    options = picker.query_one("#tool-list")
    for name in names:
        options.select(name)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.session_tools == sorted(names), "the tools to be on")
    return screen


async def send(pilot, screen, text: str) -> None:
    screen.prompt.load_text(text)
    await pilot.press("enter")


async def test_approve_a_call_inline_and_see_the_result(store: Store, tmp_path: Path) -> None:
    app = make_app(store, tmp_path, "I'll save it. " + call("write_file", path="note.txt", content="hello"),
                   "Saved note.txt for you.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await switch_on(pilot, app, "write_file")
        assert "⚙ write_file" in str(screen.title_label.render())
        assert screen.think is False  # tool calling turns thinking off (it can be turned back on)
        await send(pilot, screen, "Save hello to note.txt")
        await wait_until(pilot, lambda: screen.query(ApprovalCard), "the inline approval")
        card = screen.query_one(ApprovalCard)
        view = screen.query_one(ToolCallView)
        # The card sits in the conversation, right under the call it is about.
        children = list(screen.log_view.children)
        assert children.index(card) == children.index(view) + 1
        assert card.has_focus and app.pending_approvals == 1
        assert not (tmp_path / "note.txt").exists()
        await pilot.press("y")
        await wait_until(pilot, lambda: not screen._reply_running, "the reply to finish")
        assert (tmp_path / "note.txt").read_text() == "hello"
        assert view.ok is True and "note.txt" in view.text
        replies = [v for v in screen.message_views() if v.role == "assistant"]
        assert replies[-1].markdown == "Saved note.txt for you."
        assert not screen.query(ApprovalCard) and app.pending_approvals == 0
        session_id = screen.session_id
        # Reopened later, the chat shows the call and its result, not the raw markup.
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not screen.query(ToolCallView), "a new, empty chat")
        screen._open_session(session_id)
        await wait_until(pilot, lambda: screen.query(ToolCallView), "the call in the history")
        (again,) = screen.query(ToolCallView)
        assert again.ok is True and "write_file" in again.text
        assert all("<tool_call>" not in v.markdown for v in screen.message_views())


async def test_deny_a_call_by_key(store: Store, tmp_path: Path) -> None:
    app = make_app(store, tmp_path, call("write_file", path="x.txt", content="no"), "Understood, not saved.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await switch_on(pilot, app, "write_file")
        await send(pilot, screen, "Save it")
        await wait_until(pilot, lambda: screen.query(ApprovalCard), "the inline approval")
        await pilot.press("n")
        await wait_until(pilot, lambda: not screen._reply_running, "the reply to finish")
        view = screen.query_one(ToolCallView)
        assert view.ok is False and "denied" in view.text
        assert not (tmp_path / "x.txt").exists()
        assert screen.message_views()[-1].markdown == "Understood, not saved."


async def test_a_malformed_call_is_shown_and_sent_back(store: Store, tmp_path: Path) -> None:
    app = make_app(store, tmp_path, '<tool_call>{"name": "read_file", "arguments": {"path": </tool_call>',
                   "Sorry, let me answer directly.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await switch_on(pilot, app, "read_file")
        await send(pilot, screen, "Read it")
        await wait_until(pilot, lambda: not screen._reply_running, "the reply to finish")
        view = screen.query_one(ToolCallView)
        assert view.ok is False and "not valid JSON" in view.text
        assert screen.message_views()[-1].markdown == "Sorry, let me answer directly."
        assert isinstance(screen.message_views()[-1], MessageView)


async def test_tools_picked_for_a_new_chat_stay_on_when_the_stored_list_answers_late(
        store: Store, tmp_path: Path) -> None:
    # Picking tools on a new chat creates the session, which also starts loading its (empty) tool list.
    # That read can answer after the pick has been stored; it must not switch the tools back off.
    app = make_app(store, tmp_path, "ok")

    async def slow_session_tools(session_id: int):
        await asyncio.sleep(0.3)
        return []  # what the new chat held when the read began

    app.service.session_tools = slow_session_tools
    async with app.run_test(size=SIZE) as pilot:
        screen = await switch_on(pilot, app, "read_file")
        await pilot.pause(0.5)
        assert screen.session_tools == ["read_file"]
        assert "⚙ read_file" in str(screen.title_label.render())
