"""Starting up: first frame before the model, load failures, no model at all, an unusable data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
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
from textual.widgets import ProgressBar

from smoltui import app as app_module
from smoltui.app import SmolApp, open_store, run_tui
from smoltui.backends.base import ProgressCallback
from smoltui.backends.scripted import ScriptedBackend
from smoltui.config import Config
from smoltui.errors import ModelError
from smoltui.orchestrator.store import Store
from smoltui.paths import Paths
from smoltui.screens.chat import ChatScreen


class BrokenBackend(ScriptedBackend):
    async def load(self, progress: ProgressCallback | None = None) -> None:
        raise ModelError("model.gguf is truncated: re-download it")


async def test_first_frame_comes_before_the_model(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("Loaded and ready.", load_delay_s=2.0), tmp_path)
    service = app.service
    assert service is not None
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
        screen = chat_screen(app)
        await wait_until(pilot, lambda: screen.status.load_fraction > 0, "load progress")
        assert not service.ready.is_set()
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
        assert not service.ready.is_set()

        await wait_until(pilot, lambda: reply.finished, "the reply after loading", timeout=8)
        assert reply.markdown == "Loaded and ready."
        assert screen.status.state == "ready"
        assert not screen.status.query_one(ProgressBar).display


async def test_escape_while_waiting_for_the_model_gives_the_text_back(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("never", load_delay_s=2.0), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
        screen = chat_screen(app)
        await type_text(pilot, "hold on")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the queued message")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.message_views(), "the withdrawn message")
        assert screen.prompt.text == "hold on"
        assert store.list_sessions() == [] or all(s.message_count == 0 for s in store.list_sessions())


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
    class SlowBroken(ScriptedBackend):
        async def load(self, progress: ProgressCallback | None = None) -> None:
            import asyncio

            await asyncio.sleep(0.5)
            raise ModelError("out of memory")

    app = build_app(store, SlowBroken(), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat screen")
        screen = chat_screen(app)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.status.state == "failed", "the failure")
        await wait_until(pilot, lambda: not screen.message_views(), "the message given back")
        assert screen.prompt.text == "hi"
        assert not screen._reply_running


async def test_no_model_at_all(store: Store, tmp_path: Path) -> None:
    app = build_app(store, None, tmp_path, model_error="no model given and the bundled model is missing")
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.status.state == "missing"
        assert "bundled model is missing" in screen.status.state_text
        assert any("bundled model is missing" in n for n in notifications(app))


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


def test_open_store_falls_back_when_the_data_dir_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    paths = Paths(config_dir=tmp_path, data_dir=blocker / "data", cache_dir=tmp_path / "cache")
    store, scratch, problem = open_store(paths)
    try:
        assert problem is not None and "not-a-dir" in problem
        assert scratch is not None and scratch.is_dir()
        session = store.create_session("still works")
        assert store.get_session(session.id).title == "still works"
    finally:
        store.close()


@pytest.mark.parametrize("spec", ["scripted", "/nonexistent/model.gguf"])
def test_run_tui_builds_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    paths = Paths(config_dir=tmp_path / "config", data_dir=blocker / "data", cache_dir=tmp_path / "cache")
    built: list[SmolApp] = []

    def fake_run(self: SmolApp) -> None:
        built.append(self)

    monkeypatch.setattr(app_module, "SmolApp", type("Recorder", (SmolApp,), {"run": fake_run}))
    monkeypatch.setattr("smoltui.cli.setup_logging", lambda paths: None)
    assert run_tui(Config(), paths, model_spec=spec) == 0
    (app,) = built
    assert any("history will not be saved" in problem for problem in app._startup_errors)
    if spec == "scripted":
        assert app.service is not None and app.model_label == "scripted"
    else:
        assert app.service is None and app._model_error


def test_a_broken_config_file_opens_the_app_with_defaults_and_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smoltui.cli import main

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[chat]\nthink = maybe\n", encoding="utf-8")
    built: list[SmolApp] = []
    monkeypatch.setattr(app_module, "SmolApp", type("Recorder", (SmolApp,), {"run": lambda self: built.append(self)}))
    assert main(["--home", str(home), "--model", "scripted"]) == 0
    (app,) = built
    (problem,) = app._startup_errors
    assert str(home / "config.toml") in problem and "TOML error" in problem and "using default settings" in problem
