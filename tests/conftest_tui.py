"""Helpers for the TUI tests: build a SmolApp around a scripted backend and a real store.

Imported by ``tests/test_app_*.py`` and ``tests/test_screens_*.py`` (pytest puts ``tests/`` on the
import path); pytest only loads ``conftest.py`` by itself, hence the explicit imports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from smoltui.app import SmolApp
from smoltui.backends.base import GenerationParams
from smoltui.backends.scripted import ScriptedBackend, ScriptedReply
from smoltui.config import Config
from smoltui.orchestrator.chat import ChatService, ChatSettings
from smoltui.orchestrator.store import Store
from smoltui.screens.chat import ChatScreen
from smoltui.screens.message_view import MessageView
from smoltui.screens.themes import bundled_theme_dirs

SIZE = (80, 24)
WIDE = (140, 40)

FIXED_STATS: dict[str, Any] = {
    "prompt_tokens": 120,
    "completion_tokens": 42,
    "cached_tokens": 0,
    "ttft_s": 0.25,
    "prefill_tok_s": 480.0,
    "decode_tok_s": 18.5,
    "context_used": 162,
    "context_size": 4096,
    "total_s": 2.5,
    "stop_reason": "stop",
}


def build_app(
    store: Store,
    backend: ScriptedBackend | None,
    tmp_path: Path,
    *,
    config: Config | None = None,
    think: bool = False,
    theme_dirs: Sequence[Path] | None = None,
    initial_session: int | None = None,
    model_error: str | None = None,
    workbench: Any = None,
) -> SmolApp:
    config = config or Config()
    service = None
    if backend is not None:
        service = ChatService(
            backend, store, ChatSettings(params=GenerationParams(think=think, max_tokens=512))
        )
    return SmolApp(
        service,
        store,
        config,
        model_label=backend.model_name if backend is not None else "no model",
        model_error=model_error,
        exports_dir=tmp_path / "exports",
        theme_dirs=bundled_theme_dirs() if theme_dirs is None else theme_dirs,
        initial_session=initial_session,
        workbench=workbench,
    )


def scripted(*replies: str | ScriptedReply, delay_s: float = 0.001, **kwargs: Any) -> ScriptedBackend:
    return ScriptedBackend(list(replies) or ["ok"], delay_s=delay_s, **kwargs)


def chat_screen(app: SmolApp) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen), f"expected the chat screen, got {screen!r}"
    return screen


async def wait_until(pilot: Pilot, predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Let the app run until ``predicate()`` is true; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.01)


async def settle(pilot: Pilot, timeout: float = 5.0) -> None:
    """Wait until no worker is running (session loads, list refreshes, replies)."""
    app = pilot.app
    # is_finished, not is_running: a worker that has not started yet is pending work too.
    await wait_until(pilot, lambda: all(w.is_finished for w in app.workers), "the workers to finish", timeout)


async def ready(pilot: Pilot) -> ChatScreen:
    """Wait for the chat screen and its model (when there is one)."""
    app = pilot.app
    assert isinstance(app, SmolApp)
    await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
    if app.service is not None:
        await wait_until(pilot, lambda: app.service.ready.is_set() or app.service.load_error, "the model")
        await wait_until(pilot, lambda: chat_screen(app).status.state != "loading", "the status bar")
    return chat_screen(app)


async def type_text(pilot: Pilot, text: str) -> None:
    """Type like a person: one key per character (newlines with the newline key)."""
    keys = ["ctrl+j" if ch == "\n" else ch for ch in text]
    await pilot.press(*keys)


async def send(pilot: Pilot, text: str, *, typed: bool = False, timeout: float = 5.0) -> MessageView:
    """Put ``text`` in the message box, press Enter, wait for the reply to finish; returns its view.

    ``typed`` types it key by key; otherwise the text is pasted in, which keeps tests that are
    not about typing fast (each simulated key press waits for the app to go idle).
    """
    screen = chat_screen(pilot.app)  # type: ignore[arg-type]
    before = len(screen.message_views())
    if typed:
        await type_text(pilot, text)
    else:
        screen.prompt.load_text(text)
        screen.prompt.move_cursor(screen.prompt.document.end)
    await pilot.press("enter")
    await wait_until(pilot, lambda: len(screen.message_views()) >= before + 2, "the message to appear")
    reply = screen.message_views()[-1]
    await wait_until(pilot, lambda: reply.finished, "the reply to finish", timeout)
    await wait_until(pilot, lambda: not screen._reply_running, "the reply worker to end", timeout)
    return reply


def notifications(app: SmolApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def seed_session(store: Store, title: str, exchange: Sequence[tuple[str, str]], **message_kwargs: Any) -> int:
    """A saved chat: ``exchange`` is (role, content) pairs; assistant turns get fixed stats."""
    session = store.create_session(title, "scripted")
    for role, content in exchange:
        stats = FIXED_STATS if role == "assistant" else None
        store.add_message(session.id, role, content, stats=stats, **message_kwargs)
    return session.id


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> Iterator[Store]:
    """``store``: a real SQLite store in the test's temporary folder.

    Import ``store_fixture`` into a test module to make the ``store`` fixture available there.
    """
    opened = Store.open(tmp_path / "smoltui.db")
    yield opened
    opened.close()
