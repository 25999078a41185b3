"""Snapshots of the chat screen (80x24 and wide) and of the search dialog.

Deterministic by construction: the conversation is seeded in the store with fixed stats (the screen
shows no clock or dates), the scripted model loads instantly, and the cursor does not blink.
Update with ``pytest tests/test_screens_snapshot.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.pilot import Pilot
from tui.harness import (
    FIXED_STATS,
    SIZE,
    WIDE,
    build_app,
    open_store_now,
    ready,
    scripted,
    settle,
    wait_until,
)

from smoltui.orchestrator.store import Store
from smoltui.screens.search import SearchScreen


def _seeded_store(tmp_path: Path) -> tuple[Store, int]:
    """Two saved chats; the store to show them (opened for the app's own loop) and the tea chat's id."""
    path = tmp_path / "smoltui.db"
    tea_id = asyncio.run(_seed(path))
    return open_store_now(path), tea_id


async def _seed(path: Path) -> int:
    async with await Store.open(path) as store:
        return await _seed_chats(store)


async def _seed_chats(store: Store) -> int:
    garden = await store.create_session("Garden plans", "scripted")
    await store.add_message(garden.id, "user", "When should I sow basil?")
    await store.add_message(garden.id, "assistant", "After the last frost, in warm soil.", stats=FIXED_STATS)
    tea = await store.create_session("A good cup of tea", "scripted")
    await store.add_message(tea.id, "user", "How do I make a good cup of tea?")
    await store.add_message(
        tea.id,
        "assistant",
        "1. Boil fresh water.\n2. Steep for **3–4 minutes**.\n3. Add milk *after*, if at all.",
        thinking="The user wants practical steps. Keep it short.",
        stats=FIXED_STATS,
    )
    await store.add_message(tea.id, "user", "Green tea too?")
    await store.add_message(
        tea.id, "assistant", "Use cooler water, about `80 °C`, and steep for 2 minutes.", stats=FIXED_STATS
    )
    return tea.id


async def _settled_chat(pilot: Pilot) -> None:
    screen = await ready(pilot)
    await settle(pilot)
    await wait_until(pilot, lambda: len(screen.message_views()) == 4, "the seeded chat")
    screen.prompt.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("size", [SIZE, WIDE], ids=["80x24", "140x40"])
def test_chat_screen(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    store, session_id = _seeded_store(tmp_path)
    try:
        app = build_app(store, scripted("unused"), tmp_path, initial_session=session_id)
        assert snap_compare(app, terminal_size=size, run_before=_settled_chat)
    finally:
        asyncio.run(store.close())


def test_search_dialog(snap_compare, tmp_path: Path) -> None:
    store, _ = _seeded_store(tmp_path)

    async def search_for_water(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen), "the search dialog")
        await pilot.press(*"water")
        await wait_until(pilot, lambda: len(pilot.app.screen.hits) == 2, "two hits")
        pilot.app.screen.query_one("Input").cursor_blink = False
        await pilot.pause()

    try:
        app = build_app(store, scripted("unused"), tmp_path)
        assert snap_compare(app, terminal_size=SIZE, run_before=search_for_water)
    finally:
        asyncio.run(store.close())
