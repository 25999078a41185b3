"""Helpers for the TUI tests: a real core (real store, real gate, real run manager) around a
scripted backend, and the app over it.

Imported by ``tests/test_app_*.py`` and ``tests/test_screens_*.py`` as ``tui.harness`` (pytest
puts ``tests/`` on the import path).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest_asyncio
from textual.pilot import Pilot

from smoltui.app import SmolApp
from smoltui.backends.base import Backend
from smoltui.backends.scripted import ScriptedBackend, ScriptedReply
from smoltui.config import Config
from smoltui.core import Core, Settings
from smoltui.core import build_core as core_from_settings
from smoltui.orchestrator.store import Store
from smoltui.paths import Paths
from smoltui.screens.chat import ChatScreen
from smoltui.screens.message_view import MessageView
from smoltui.screens.themes import bundled_theme_dirs
from smoltui.tools.base import Tool

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


def build_core(
    store: Store,
    backend: Backend | None,
    tmp_path: Path,
    *,
    config: Config | None = None,
    think: bool = False,
    tools: Sequence[Tool] | None = None,
    project_dir: Path | None = None,
    model_spec: str | None = None,
) -> Core:
    """A core over ``store``: ``backend`` as its model (None: ``model_spec``, by default a model
    file that does not exist, so the core has no model and says why); ``tools`` replace the
    built-in ones; ``project_dir`` is where the tree finds ``workflows/``."""
    if config is None:
        config = Config()
        config.chat.max_tokens = 512
    config.chat.think = think
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    settings = Settings(config, Paths.resolve(home), log_to_file=False,
                        model_spec=model_spec or (None if backend is not None else str(tmp_path / "missing.gguf")),
                        workspace=tmp_path, project_dir=project_dir or tmp_path / "project")
    core = core_from_settings(settings, store=store, backend=backend)
    if tools is not None:
        core.tools.replace_origin("builtin", [t for t in tools if t.origin == "builtin"])
        for origin in {t.origin for t in tools if t.origin != "builtin"}:
            core.tools.replace_origin(origin, [t for t in tools if t.origin == origin])
    return core


def build_app(
    store: Store,
    backend: Backend | None,
    tmp_path: Path,
    *,
    config: Config | None = None,
    think: bool = False,
    theme_dirs: Sequence[Path] | None = None,
    initial_session: int | None = None,
    tools: Sequence[Tool] | None = None,
    project_dir: Path | None = None,
    core: Core | None = None,
) -> SmolApp:
    """The app over a core built by :func:`build_core` (or over ``core``)."""
    core = core or build_core(store, backend, tmp_path, config=config, think=think, tools=tools,
                              project_dir=project_dir)
    return SmolApp(core, theme_dirs=bundled_theme_dirs() if theme_dirs is None else theme_dirs,
                   initial_session=initial_session)


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
    model = app.core.model
    if model.available:
        await wait_until(pilot, lambda: model.ready.is_set() or model.load_error, "the model")
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
    await wait_until(pilot, lambda: not screen.replying, "the reply to end", timeout)
    return reply


def notifications(app: SmolApp) -> list[str]:
    """The notifications on screen now, as ``title: message``."""
    return [f"{n.title}: {n.message}" for n in app.shown_notifications]


async def seed_session(store: Store, title: str, exchange: Sequence[tuple[str, str]], **message_kwargs: Any) -> int:
    """A saved chat: ``exchange`` is (role, content) pairs; assistant turns get fixed stats."""
    session = await store.create_session(title, "scripted")
    for role, content in exchange:
        stats = FIXED_STATS if role == "assistant" else None
        await store.add_message(session.id, role, content, stats=stats, **message_kwargs)
    return session.id


def open_store_now(path: Path) -> Store:
    """A store for a synchronous test (a snapshot test runs the app in a loop of its own)."""
    return asyncio.run(Store.open(path))


@pytest_asyncio.fixture(name="store")
async def store_fixture(tmp_path: Path) -> AsyncIterator[Store]:
    """``store``: a real SQLite store in the test's temporary folder.

    Import ``store_fixture`` into a test module to make the ``store`` fixture available there.
    """
    opened = await Store.open(tmp_path / "smoltui.db")
    yield opened
    await opened.close()
