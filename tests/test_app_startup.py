"""Starting up: first frame before the model, load failures, no model at all, an unusable data dir."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import ProgressBar
from tui.harness import (  # noqa: F401  (store_fixture provides the store fixture)
    SIZE,
    WIDE,
    build_app,
    chat_screen,
    notifications,
    ready,
    scripted,
    store_fixture,
    type_text,
    wait_until,
)

from smoltui import app as app_module
from smoltui.app import SmolApp, open_store, run_app
from smoltui.backends.base import LoadProgress, ProgressCallback
from smoltui.backends.scripted import ScriptedBackend
from smoltui.config import Config
from smoltui.core import Settings
from smoltui.errors import ModelError
from smoltui.orchestrator.store import Store
from smoltui.paths import Paths
from smoltui.screens.chat import ChatScreen


class BrokenBackend(ScriptedBackend):
    async def load(self, progress: ProgressCallback | None = None) -> None:
        raise ModelError("model.gguf is truncated: re-download it")


class HeldLoad(ScriptedBackend):
    """Loads halfway, then waits until the test calls :meth:`finish_loading` (and fails then, with
    ``failure``): the model is "still loading" for exactly as long as a test needs, however slow
    the machine."""

    def __init__(self, *replies: str, failure: str | None = None) -> None:
        super().__init__(list(replies) or ["ok"], delay_s=0.001)
        self.failure = failure
        self._release = asyncio.Event()

    def finish_loading(self) -> None:
        self._release.set()

    async def load(self, progress: ProgressCallback | None = None) -> None:
        if progress:
            progress(LoadProgress(0.5, "loading scripted model (2/4)"))
        await self._release.wait()
        if self.failure is not None:
            raise ModelError(self.failure)
        if progress:
            progress(LoadProgress(1.0, "loading scripted model (4/4)"))


async def test_first_frame_comes_before_the_model(store: Store, tmp_path: Path) -> None:
    backend = HeldLoad("Loaded and ready.")
    app = build_app(store, backend, tmp_path)
    model = app.core.model
    assert model.available
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
        screen = chat_screen(app)
        await wait_until(pilot, lambda: screen.status.load_fraction > 0, "load progress")
        assert not model.ready.is_set()
        assert screen.status.state == "loading"
        progress = screen.status.query_one(ProgressBar)
        assert progress.display and progress.region.width > 0, "the progress bar is on screen"
        assert 0 < progress.progress < 1
        assert "loading" in screen.status.state_text

        # Typing works while the model loads; the message waits for it.
        await type_text(pilot, "are you there")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the queued message")
        reply = screen.message_views()[1]
        assert "waiting for the model" in str(reply.query_one(".stats").render())
        assert not model.ready.is_set()

        backend.finish_loading()
        await wait_until(pilot, lambda: reply.finished, "the reply after loading", timeout=8)
        assert reply.markdown == "Loaded and ready."
        assert screen.status.state == "ready"
        assert not screen.status.query_one(ProgressBar).display


async def test_escape_while_waiting_for_the_model_gives_the_text_back(store: Store, tmp_path: Path) -> None:
    backend = HeldLoad("never")
    app = build_app(store, backend, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
        screen = chat_screen(app)
        await type_text(pilot, "hold on")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the queued message")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.message_views(), "the withdrawn message")
        assert screen.prompt.text == "hold on"
        sessions = await store.list_sessions()
        assert sessions == [] or all(s.message_count == 0 for s in sessions)
        backend.finish_loading()
        await wait_until(pilot, lambda: screen.status.state == "ready", "the model")
        assert screen.message_views() == [] and screen.prompt.text == "hold on", "nothing is sent by itself"


async def test_model_failure_keeps_the_app_up(store: Store, tmp_path: Path) -> None:
    app = build_app(store, BrokenBackend(), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await wait_until(pilot, lambda: screen.status.state == "failed", "the failed state")
        assert app.is_running
        assert "model failed" in screen.status.state_text
        assert "truncated" in screen.status.state_text
        assert any("truncated" in n for n in notifications(app))
        # Sending says why it cannot, and keeps the text.
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await pilot.pause()
        assert screen.prompt.text == "hello"
        assert screen.message_views() == []
        assert any("Cannot send" in n for n in notifications(app))


async def test_model_failure_while_a_message_waits(store: Store, tmp_path: Path) -> None:
    backend = HeldLoad(failure="out of memory")
    app = build_app(store, backend, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
        screen = chat_screen(app)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the queued message")
        backend.finish_loading()
        await wait_until(pilot, lambda: screen.status.state == "failed", "the failure")
        await wait_until(pilot, lambda: not screen.message_views(), "the message given back")
        assert screen.prompt.text == "hi"
        assert not screen.replying


async def test_no_model_at_all(store: Store, tmp_path: Path) -> None:
    app = build_app(store, None, tmp_path)  # pointed at a model file that does not exist
    why = f"model file not found: {tmp_path / 'missing.gguf'}"
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.status.state == "missing"
        assert why in screen.status.state_text
        assert any(why in n for n in notifications(app))


async def test_layout_at_80x24_and_wide(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("ok"), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.focused is screen.prompt
        assert screen.prompt.region.height >= 3 and screen.prompt.region.bottom <= 24
        assert screen.status.region.height == 1
        assert screen.session_list.region.width == 0
        # Toggling the chat list keeps the message box on screen and usable.
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert screen.session_list.region.width > 0
        assert screen.prompt.region.width >= 40
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert screen.session_list.region.width == 0
        assert screen.focused is screen.prompt
        # Tab leaves the message box and comes back (no keyboard trap).
        await pilot.press("tab")
        await pilot.press("shift+tab")
        assert screen.focused is screen.prompt
    async with build_app(store, scripted("ok"), tmp_path).run_test(size=WIDE) as pilot:
        screen = await ready(pilot)
        assert screen.session_list.region.width > 0


async def test_open_store_falls_back_when_the_data_dir_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    paths = Paths(config_dir=tmp_path, data_dir=blocker / "data", cache_dir=tmp_path / "cache")
    store, scratch, problem = await open_store(paths)
    try:
        assert problem is not None and "not-a-dir" in problem
        assert scratch is not None and scratch.is_dir()
        session = await store.create_session("still works")
        assert (await store.get_session(session.id)).title == "still works"
    finally:
        await store.close()


@dataclass
class FirstScreen:
    """What the launched app showed once it was up: its notifications and its status line."""

    notifications: list[str]
    model_name: str
    model_state: str
    state_text: str


def record_launches(monkeypatch: pytest.MonkeyPatch) -> list[FirstScreen]:
    """Make the launcher's app run headless: it starts, shows its first screen, and quits."""
    shown: list[FirstScreen] = []

    class Recorder(SmolApp):
        async def run_async(self, **kwargs: Any) -> int:
            async with self.run_test(size=SIZE) as pilot:
                screen = await ready(pilot)
                status = screen.status
                shown.append(FirstScreen(notifications(self), status.model_name, status.state,
                                         status.state_text))
            return 0

    monkeypatch.setattr(app_module, "SmolApp", Recorder)
    return shown


@pytest.mark.parametrize("spec", ["scripted", "/nonexistent/model.gguf"])
async def test_run_app_builds_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    paths = Paths(config_dir=tmp_path / "config", data_dir=blocker / "data", cache_dir=tmp_path / "cache")
    shown = record_launches(monkeypatch)
    assert await run_app(Settings(Config(), paths, model_spec=spec, log_to_file=False)) == 0
    (first,) = shown
    assert any("history will not be saved" in n for n in first.notifications), first.notifications
    if spec == "scripted":
        assert (first.model_state, first.model_name) == ("ready", "scripted")
    else:
        assert first.model_state == "missing"
        assert "model file not found: /nonexistent/model.gguf" in first.state_text
        assert any("model file not found" in n for n in first.notifications), first.notifications


def test_a_broken_config_file_opens_the_app_with_defaults_and_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smoltui.cli import main

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[chat]\nthink = maybe\n", encoding="utf-8")
    monkeypatch.setattr("smoltui.core.setup_logging", lambda paths: None)  # keep pytest's log capture
    shown = record_launches(monkeypatch)
    assert main(["--home", str(home), "--model", "scripted"]) == 0
    (first,) = shown
    (problem,) = first.notifications  # the one problem, and nothing else to worry about
    assert str(home / "config.toml") in problem and "TOML error" in problem and "using default settings" in problem
    assert first.model_state == "ready", "the defaults are good enough to chat"
