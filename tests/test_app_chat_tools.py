"""Tool calling in the chat, by keyboard: switch tools on with the picker, approve or deny a call
inline under it, see its result, and find it all again when the chat is reopened."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tui.harness import SIZE, build_app, ready, scripted, settle, store_fixture, wait_until  # noqa: F401

from smoltui.config import Config
from smoltui.orchestrator.approval import Policy
from smoltui.orchestrator.store import Store
from smoltui.screens.approval_card import ApprovalCard
from smoltui.screens.message_view import MessageView
from smoltui.screens.tool_call_view import ToolCallView
from smoltui.screens.tool_picker import ToolPickerDialog
from smoltui.tools.builtins import builtin_tools


def call(name: str, **arguments: object) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def make_app(store: Store, tmp_path: Path, *replies: str, think: bool = True):
    """The built-in tools under the default policy (writing asks, reading runs); files land in
    ``tmp_path`` (the harness's workspace), workflows are looked for in ``tmp_path/workflows``."""
    (tmp_path / "workflows").mkdir(exist_ok=True)
    config = Config()
    config.approval = Policy()
    return build_app(store, scripted(*replies), tmp_path, config=config, tools=builtin_tools(), think=think,
                     project_dir=tmp_path)


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
        # The card waits for the user to come to it; the message box keeps the keys meanwhile.
        assert screen.prompt.has_focus and not card.has_focus and app.pending_approvals == 1
        assert not (tmp_path / "note.txt").exists()
        await pilot.press("ctrl+g")
        assert card.has_focus
        await pilot.press("y")
        await wait_until(pilot, lambda: not screen.replying, "the reply to finish")
        assert (tmp_path / "note.txt").read_text() == "hello"
        assert view.ok is True and "note.txt" in view.text
        replies = [v for v in screen.message_views() if v.role == "assistant"]
        assert replies[-1].markdown == "Saved note.txt for you."
        assert not screen.query(ApprovalCard) and app.pending_approvals == 0
        session_id = screen.session_id
        # Reopened later, the chat shows the call and its result, not the raw markup.
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not screen.query(ToolCallView), "a new, empty chat")
        screen.open_session(session_id)
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
        await pilot.press("ctrl+g", "n")
        await wait_until(pilot, lambda: not screen.replying, "the reply to finish")
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
        await wait_until(pilot, lambda: not screen.replying, "the reply to finish")
        view = screen.query_one(ToolCallView)
        assert view.ok is False and "not valid JSON" in view.text
        assert screen.message_views()[-1].markdown == "Sorry, let me answer directly."
        assert isinstance(screen.message_views()[-1], MessageView)


async def test_tools_picked_for_a_new_chat_stay_on_when_the_stored_list_answers_late(
        store: Store, tmp_path: Path) -> None:
    # Picking tools on a new chat creates the session, which also starts loading its (empty) tool list.
    # That read can answer after the pick has been stored; it must not switch the tools back off.
    app = make_app(store, tmp_path, "ok")
    release = asyncio.Event()

    async def late_session_tools(session_id: int):
        await release.wait()  # held back until the pick has been stored
        return []  # what the new chat held when the read began

    app.core.chat.session_tools = late_session_tools
    async with app.run_test(size=SIZE) as pilot:
        screen = await switch_on(pilot, app, "read_file")
        release.set()
        await settle(pilot)  # the late read has answered (or was called off)
        assert screen.session_tools == ["read_file"]
        assert "⚙ read_file" in str(screen.title_label.render())


async def test_a_reply_of_calls_only_keeps_its_stats_line(store: Store, tmp_path: Path) -> None:
    # Two rounds of calls without a word, then the answer: every reply shows its stats line,
    # above the calls it made, live and again when the chat is reopened.
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    app = make_app(store, tmp_path, call("read_file", path="a.txt"), call("read_file", path="b.txt"),
                   "a.txt says alpha, b.txt says beta.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await switch_on(pilot, app, "read_file")

        def shown_replies() -> list[MessageView]:
            return [v for v in screen.message_views() if v.role == "assistant"]

        def check() -> None:
            replies = shown_replies()
            assert len(replies) == 3, [v.markdown for v in replies]
            children = list(screen.log_view.children)
            calls = list(screen.query(ToolCallView))
            for reply in replies:
                assert "token" in reply.stats_text and "tok/s" in reply.stats_text
                line = reply.query_one(".stats")
                assert line.display and line.region.height == 1  # on screen, not just in the tree
            # Each call-only reply stands right above its call, showing no empty body.
            for reply, view in zip(replies[:2], calls, strict=True):
                assert children.index(view) == children.index(reply) + 1
                assert reply.markdown == "" and reply.region.height == 2, reply.region  # role, stats
            assert replies[-1].markdown == "a.txt says alpha, b.txt says beta."

        await send(pilot, screen, "What do a.txt and b.txt say?")  # reading runs without asking
        await wait_until(pilot, lambda: len(shown_replies()) == 3 and not screen.replying, "the answer")
        await pilot.pause()
        check()
        session_id = screen.session_id
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not screen.message_views(), "a new, empty chat")
        screen.open_session(session_id)
        await wait_until(pilot, lambda: len(screen.query(ToolCallView)) == 2, "the calls in the history")
        await pilot.pause()
        check()


async def test_the_tool_picker_help_is_read_whole_at_80_columns(store: Store, tmp_path: Path) -> None:
    app = make_app(store, tmp_path, "ok")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, ToolPickerDialog), "the tool picker")
        await pilot.pause()
        picker = app.screen
        box = picker.query_one(".dialog-box")
        help_line = picker.query_one(".dialog-help")
        text = str(help_line.render())
        assert "unless [approval] says otherwise" in text  # the config section's name, not markup
        # Wrapped inside the box, not cut at its edge.
        assert help_line.region.height >= 2 and box.content_region.contains_region(help_line.region)
        await pilot.press("escape")


async def test_a_call_left_waiting_is_found_again_with_its_card(store: Store, tmp_path: Path) -> None:
    # The user leaves the chat while a call waits for them: ctrl+g (the "waiting approval" key)
    # brings the chat back with the card under its call, and answering it finishes that call.
    app = make_app(store, tmp_path, call("write_file", path="note.txt", content="hello"), "Saved it.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await switch_on(pilot, app, "write_file")
        await send(pilot, screen, "Save hello to note.txt")
        await wait_until(pilot, lambda: screen.query(ApprovalCard), "the inline approval")
        session_id = screen.session_id
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not screen.query(ToolCallView), "a new, empty chat")
        assert app.pending_approvals == 1
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: screen.session_id == session_id and screen.query(ApprovalCard),
                         "the chat and its card again")
        card = screen.query_one(ApprovalCard)
        view = screen.query_one(ToolCallView)
        children = list(screen.log_view.children)
        assert children.index(card) == children.index(view) + 1 and card.has_focus
        await pilot.press("y")
        await wait_until(pilot, lambda: not screen.replying, "the reply to finish")
        assert (tmp_path / "note.txt").read_text() == "hello"
        assert view.ok is True and "note.txt" in view.text  # the call shown again follows the call
        assert not screen.query(ApprovalCard) and app.pending_approvals == 0
        assert screen.message_views()[-1].markdown == "Saved it."


async def test_stopping_the_reply_while_a_call_asks_takes_its_card_away(store: Store, tmp_path: Path) -> None:
    app = make_app(store, tmp_path, call("write_file", path="note.txt", content="hello"), "unused")
    async with app.run_test(size=SIZE) as pilot:
        screen = await switch_on(pilot, app, "write_file")
        await send(pilot, screen, "Save hello to note.txt")
        await wait_until(pilot, lambda: screen.query(ApprovalCard) and app.pending_approvals == 1, "the card")
        await pilot.press("escape")  # stop: the call is cancelled, nothing runs
        await wait_until(pilot, lambda: not screen.replying, "the reply to end")
        view = screen.query_one(ToolCallView)
        assert view.ok is False and "cancelled" in view.text
        await wait_until(pilot, lambda: not screen.query(ApprovalCard), "the card to go")
        assert app.pending_approvals == 0 and not screen.status.has_class("-approvals")
        assert screen.prompt.has_focus
        assert not (tmp_path / "note.txt").exists()
