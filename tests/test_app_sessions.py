"""Saved chats: new, resume, rename, delete, and search across them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import Input
from tui.harness import (  # noqa: F401  (store_fixture provides the store fixture)
    SIZE,
    WIDE,
    build_app,
    chat_screen,
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
from smoltui.backends.scripted import ScriptedBackend
from smoltui.orchestrator.store import HIGHLIGHT_CLOSE, HIGHLIGHT_OPEN, Store
from smoltui.screens.chat import ChatScreen
from smoltui.screens.dialogs import ConfirmDialog, TextPromptDialog
from smoltui.screens.search import SearchScreen

OLD = [
    ("user", "What is WAL mode?"),
    ("assistant", "Write-ahead logging: readers never wait for the writer."),
]


async def test_new_resume_rename_delete(store: Store, tmp_path: Path) -> None:
    old_id = await seed_session(store, "Old chat", OLD)
    app = build_app(store, scripted("Fresh reply."), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        # At 80 columns the chat list starts hidden; the message box has the focus.
        assert not screen.session_list.display or not screen.session_list.region.width
        assert screen.focused is screen.prompt

        await send(pilot, "hello there")
        new_id = screen.session_id
        assert new_id is not None and new_id != old_id
        assert (await store.get_session(new_id)).title == "hello there"

        # New chat: an empty view; nothing is stored until the first message.
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert screen.session is None and screen.message_views() == []
        assert screen.title_label.render().plain == "New chat"
        assert len(await store.list_sessions()) == 2

        # Resume the old chat from the list, by keyboard: ctrl+b shows and focuses it.
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert screen.session_list.region.width > 0
        assert screen.session_list.options.has_focus
        assert [s.title for s in screen.session_list.sessions] == ["hello there", "Old chat"]
        await pilot.press("down", "enter")
        await settle(pilot)
        assert screen.session_id == old_id
        assert [(v.role, v.markdown) for v in screen.message_views()] == OLD
        assert screen.focused is screen.prompt
        assert screen.title_label.render().plain == "Old chat"

        # Rename it: the dialog starts with the old title selected, typing replaces it.
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptDialog), "the rename dialog")
        assert app.screen.query_one(Input).value == "Old chat"
        await type_text(pilot, "WAL")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ChatScreen)
        assert (await store.get_session(old_id)).title == "WAL"
        assert screen.title_label.render().plain == "WAL"
        assert "WAL" in [s.title for s in screen.session_list.sessions]

        # Escape in the dialog keeps the title.
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptDialog), "the rename dialog")
        await type_text(pilot, "zz")
        await pilot.press("escape")
        await settle(pilot)
        assert (await store.get_session(old_id)).title == "WAL"

        # Delete, declined: nothing happens.
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirm dialog")
        await pilot.press("n")
        await settle(pilot)
        assert (await store.get_session(old_id)).title == "WAL"

        # Delete, confirmed: gone from the store and the list; the view starts a new chat.
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirm dialog")
        await pilot.press("y")
        await settle(pilot)
        assert [s.id for s in await store.list_sessions()] == [new_id]
        assert await store.messages(old_id) == []
        assert screen.session is None and screen.message_views() == []
        assert [s.id for s in screen.session_list.sessions] == [new_id]


async def test_delete_from_the_list_acts_on_the_highlighted_chat(store: Store, tmp_path: Path) -> None:
    keep = await seed_session(store, "Keep me", OLD)
    doomed = await seed_session(store, "Delete me", OLD)
    app = build_app(store, scripted("ok"), tmp_path, initial_session=keep)
    async with app.run_test(size=WIDE) as pilot:
        screen = await ready(pilot)
        await settle(pilot)
        assert screen.session_id == keep
        # Wide enough: the list is shown without asking.
        assert screen.session_list.region.width > 0
        screen.session_list.options.focus()
        await pilot.pause()
        assert screen.session_list.highlighted_session.id == keep
        await pilot.press("up")  # newest first: "Delete me" is above
        assert screen.session_list.highlighted_session.id == doomed
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirm dialog")
        assert "Delete me" in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("y")
        await settle(pilot)
        assert [s.id for s in await store.list_sessions()] == [keep]
        assert screen.session_id == keep, "the chat on screen stays"
        assert len(screen.message_views()) == 2


async def test_search_opens_the_chat_at_the_hit(store: Store, tmp_path: Path) -> None:
    garden = await seed_session(
        store,
        "Garden",
        [("user", "And basil?"), ("assistant", "Basil likes warmth.")]
        + [
            ("user", "What do tomatoes need?"),
            ("assistant", "Tomatoes need full sun and deep, regular watering."),
        ]
        * 8,
    )
    await seed_session(store, "Cooking", [("user", "How long do I boil an egg?"), ("assistant", "Nine minutes.")])
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, SearchScreen), "the search dialog")
        search = app.screen
        await type_text(pilot, "warmth")
        await wait_until(pilot, lambda: search.hits, "search results")
        assert {hit.session_title for hit in search.hits} == {"Garden"}
        first = search.hits[0]
        assert f"{HIGHLIGHT_OPEN}warmth{HIGHLIGHT_CLOSE}" in first.snippet
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
        await settle(pilot)
        assert screen.session_id == garden
        highlighted = [v for v in screen.message_views() if v.has_class("-highlight")]
        assert [v.message_id for v in highlighted] == [first.message_id]
        assert "warmth" in highlighted[0].markdown
        # Scrolled up to the hit (an opened chat otherwise shows its end, far below it).
        await pilot.pause()
        assert highlighted[0].region.height > 0
        assert screen.log_view.region.contains_region(highlighted[0].region)


async def test_search_updates_as_you_type_and_escape_closes(store: Store, tmp_path: Path) -> None:
    await seed_session(store, "Garden", [("user", "tomatoes"), ("assistant", "sun")])
    await seed_session(store, "Kitchen", [("user", "tomato soup"), ("assistant", "simmer")])
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, SearchScreen), "the search dialog")
        search = app.screen
        await type_text(pilot, "tomat")
        await wait_until(pilot, lambda: len(search.hits) == 2, "both chats (prefix match)")
        await type_text(pilot, "o soup")
        await wait_until(pilot, lambda: len(search.hits) == 1, "the narrowed result")
        assert search.hits[0].session_title == "Kitchen"
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
        assert screen.session is None, "closing the search opens nothing"


async def test_history_is_browsable_without_a_model(store: Store, tmp_path: Path) -> None:
    old_id = await seed_session(store, "Old chat", OLD)
    app = build_app(store, None, tmp_path)  # a model file that does not exist
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+b")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert screen.session_id == old_id
        assert [v.markdown for v in screen.message_views()] == [m for _, m in OLD]
        assert chat_screen(app).status.state == "missing"
        # The status line says why there is no model: the file it was pointed at is not there.
        assert f"model file not found: {tmp_path / 'missing.gguf'}" in chat_screen(app).status.state_text


class HeldReply(ScriptedBackend):
    """Streams the first words of its reply, then holds the rest until the test calls :meth:`go_on`:
    the reply is "still being written" for as long as the test needs, however slow the machine."""

    def __init__(self, reply: str, *, words_first: int = 5) -> None:
        super().__init__([reply], delay_s=0.001)
        self.words_first = words_first
        self._go = asyncio.Event()

    def go_on(self) -> None:
        self._go.set()

    async def stream(self, messages, params, cancel):  # noqa: ANN001, ANN201
        words = 0
        async for event in super().stream(messages, params, cancel):
            if isinstance(event, TextDelta):
                words += 1
                if words > self.words_first:
                    await self._go.wait()
            yield event


async def test_leaving_a_chat_mid_reply_and_coming_back(store: Store, tmp_path: Path) -> None:
    full = " ".join(f"w{i}" for i in range(40))
    backend = HeldReply(full)
    app = build_app(store, backend, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        screen.prompt.load_text("long one")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2 and screen.message_views()[1].markdown,
                         "the reply to begin")
        session_id = screen.session_id
        assert session_id is not None
        await pilot.press("ctrl+n")
        assert screen.session is None and screen.message_views() == []
        # The reply goes on elsewhere; a new message has to wait for it.
        screen.prompt.load_text("meanwhile")
        await pilot.press("enter")
        assert screen.message_views() == [] and screen.prompt.text == "meanwhile"
        screen.open_session(session_id)
        await wait_until(pilot, lambda: screen.session_id == session_id and screen.message_views(), "the chat again")
        assert app.core.chat.busy, "back while the reply is still being written"
        backend.go_on()
        await wait_until(pilot, lambda: not app.core.chat.busy, "the reply to finish", timeout=8)
        await settle(pilot)
        views = screen.message_views()
        assert [v.role for v in views] == ["user", "assistant"]
        assert views[1].markdown == full
        assert [m.content for m in await store.messages(session_id)] == ["long one", full]


async def test_search_shows_tool_calls_readably(store: Store, tmp_path: Path) -> None:
    call = '<tool_call>\n{"name": "read_file", "arguments": {"path": "notes.txt"}}\n</tool_call>'
    await seed_session(
        store,
        "Files",
        [("user", "What is in my notes?"), ("assistant", f"Let me look.\n{call}"), ("user", "thanks")],
    )
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, SearchScreen), "the search dialog")
        search = app.screen
        await type_text(pilot, "notes")
        await wait_until(pilot, lambda: any(hit.role == "assistant" for hit in search.hits), "the call's hit")
        results = search.query_one("#search-results")
        shown = [results.get_option_at_index(i).prompt for i in range(results.option_count)]
        (call_hit,) = [prompt for prompt in shown if "assistant" in prompt.plain]
        text = call_hit.plain
        assert "<tool_call>" not in text and "tool_call>" not in text and "</tool" not in text
        assert 'Let me look. ⚙ {"name": "read_file", "arguments": {"path": "notes.txt"}}' in text
        highlighted = [call_hit.plain[span.start : span.end] for span in call_hit.spans if "reverse" in str(span.style)]
        assert highlighted == ["notes"]
