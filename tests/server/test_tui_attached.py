"""The TUI as a client of ``smoltui serve``, with real processes: a real server started with
``smoltui serve --detach`` in a temporary home (only its model is swapped for a slow scripted one,
through a ``sitecustomize`` on its PYTHONPATH), the real TUI in a real terminal (tmux), and the
TUI under Pilot in this process, attached to that server.

- attached: the status bar says so, and a reply streams from the server's model;
- it outlives the terminal: a reply and a run started from the TUI go on after tmux kill-session;
  a TUI opened again shows the finished reply and the run's waiting call, and answers it;
- two TUIs attached at once see the same approval; answered in one, the other's card goes away.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from tui.harness import WIDE, ready, send, wait_until

from server.harness import APPENDING_WORKFLOW, private_runtime_dir, smoltui
from smoltui.app import SmolApp, attach_to_server
from smoltui.config import Config
from smoltui.core import Settings
from smoltui.orchestrator.events import TokenDelta
from smoltui.paths import Paths
from smoltui.screens.approval_card import ApprovalCard
from smoltui.screens.run_view import RunScreen
from smoltui.screens.themes import bundled_theme_dirs
from smoltui.server.attached import AttachedCore
from smoltui.server.client import ServerClient, probe
from smoltui.server.locations import socket_path
from tests.conftest import PYTHON, REPO

WORDS = 300
TOKEN_DELAY_S = 0.01
REPLY = " ".join(f"w{i}" for i in range(WORDS))
"""The server's model writes this, a word every 10 ms: about 3 s, long enough to close a terminal
in the middle of it."""

LONG_WORDS = 1000
LONG_REPLY = " ".join(f"w{i}" for i in range(LONG_WORDS))
"""About 10 s: still being written when a closed terminal's TUI has gone (it may take seconds)."""

SITECUSTOMIZE = f"""
import faulthandler, os, signal
if os.environ.get("SMOLTUI_TEST_STACKS"):
    faulthandler.register(signal.SIGUSR1, file=open(os.environ["SMOLTUI_TEST_STACKS"] + f".{{os.getpid()}}", "w"))
import smoltui.core
from smoltui.backends.scripted import ScriptedBackend

words = int(os.environ.get("SMOLTUI_TEST_WORDS", "{WORDS}"))
reply = " ".join(f"w{{i}}" for i in range(words))
smoltui.core.build_backend = lambda ref, config, paths: ScriptedBackend([reply], delay_s={TOKEN_DELAY_S})
"""

TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


@dataclass
class Served:
    home: Path
    project: Path
    env: dict[str, str]
    pid: int

    def client(self) -> ServerClient:
        client = ServerClient.for_home(Paths.resolve(self.home))
        assert client is not None, "no server runs for the home"
        return client

    def workflow(self) -> Path:
        return self.project / "workflows" / "append.yaml"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """``smoltui serve --detach`` for a new home, with a workflow whose one task asks for approval."""
    yield from serve(tmp_path, monkeypatch, WORDS)


@pytest.fixture
def served_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The same, its model writing :data:`LONG_REPLY`."""
    yield from serve(tmp_path, monkeypatch, LONG_WORDS)


def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, words: int) -> Iterator[Served]:
    home, project, site = tmp_path / "home", tmp_path / "project", tmp_path / "site"
    for folder in (home, project / "workflows", site):
        folder.mkdir(parents=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (project / "workflows" / "append.yaml").write_text(APPENDING_WORKFLOW.format(name="append"))
    runtime = private_runtime_dir()
    env = {**os.environ, "SMOLTUI_HOME": str(home), "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": "http://127.0.0.1:9", "XDG_RUNTIME_DIR": str(runtime),
           "PYTHONPATH": f"{site}{os.pathsep}{REPO}", "SMOLTUI_TEST_WORDS": str(words)}
    env.pop("SMOLTUI_LOCAL", None)
    for name in ("SMOLTUI_HOME", "XDG_RUNTIME_DIR"):  # this process finds the same server
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("SMOLTUI_LOCAL", raising=False)
    started = smoltui(env, "serve", "--detach", "--model", "scripted")
    assert started.returncode == 0, started.stderr
    health = probe(socket_path(Paths.resolve(home)))
    assert health is not None, "the server does not answer after --detach returned"
    try:
        yield Served(home, project, env, health["pid"])
    finally:
        smoltui(env, "serve", "stop")
        shutil.rmtree(runtime, ignore_errors=True)


@pytest_asyncio.fixture
async def client(served: Served) -> AsyncIterator[ServerClient]:
    async with served.client() as opened:
        yield opened


async def attached_app(served: Served) -> SmolApp:
    """The app as ``smoltui`` builds it when a server runs: attached, never in-process."""
    settings = Settings(Config(), Paths.resolve(served.home), log_to_file=False, project_dir=served.project)
    problems: list[str] = []
    core = await attach_to_server(settings, problems)
    assert isinstance(core, AttachedCore), problems
    return SmolApp(core, theme_dirs=bundled_theme_dirs())


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0,
                     shown: Callable[[], str] | None = None) -> Any:
    """Ask again until ``check()`` (a coroutine function) answers something true; ``shown``: what
    a terminal shows, said when it never does."""
    deadline = time.monotonic() + timeout
    while not (answer := await check()):
        if time.monotonic() > deadline:
            screen = f"; the terminal shows:\n{shown()}" if shown is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{screen}")
        await asyncio.sleep(0.05)
    return answer


# -- attached ------------------------------------------------------------------------------------


async def test_the_tui_attaches_to_a_running_server_says_so_and_its_reply_streams_from_it(
        served: Served, client: ServerClient) -> None:
    app = await attached_app(served)
    core = app.core
    tokens: list[TokenDelta] = []
    core.bus.subscribe(lambda event: tokens.append(event) if isinstance(event, TokenDelta) else None)
    try:
        async with app.run_test(size=WIDE) as pilot:
            screen = await ready(pilot)
            assert screen.status.server == f"attached to smoltui serve (pid {served.pid})"
            assert f"attached to smoltui serve (pid {served.pid})" in str(screen.status.query_one("#sb-server").render())
            reply = await send(pilot, "count for me", timeout=15)
            assert reply.markdown == REPLY
            assert len(tokens) > WORDS / 2  # streamed word by word, not handed over at the end
            session_id = screen.session_id
            assert session_id is not None
    finally:
        await core.close()
    # The server wrote it: its model, its store.
    assert core.model.backend is not None and core.model.backend.name == "scripted"
    [user, assistant] = await client.messages(session_id)
    assert (user["content"], assistant["content"], assistant["cut_off"]) == ("count for me", REPLY, False)
    assert (await client.health())["pid"] == served.pid  # closing the TUI left the server running


async def test_with_smoltui_local_the_tui_builds_its_core_in_process(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOLTUI_LOCAL", "1")
    settings = Settings(Config(), Paths.resolve(served.home), log_to_file=False, project_dir=served.project)
    assert await attach_to_server(settings, []) is None


async def test_quitting_an_attached_tui_asks_nothing_and_its_server_keeps_the_run(
        served: Served, client: ServerClient) -> None:
    run = await client.launch(served.workflow())
    await eventually(lambda: client.approvals(run_id=run["id"]), "the run's call to ask")
    app = await attached_app(served)
    try:
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            assert app.pending_approvals == 1
            await pilot.press("ctrl+q")  # in-process this would ask to cancel the run: not here
            await wait_until(pilot, lambda: not app.is_running, "the app to quit")
    finally:
        await app.core.close()
    run = await client.run(run["id"])
    assert run["state"] == "running" and len(run["approvals"]) == 1


async def test_the_status_bar_says_reconnecting_while_the_server_is_away_and_names_the_new_one(
        served: Served) -> None:
    app = await attached_app(served)
    try:
        async with app.run_test(size=WIDE) as pilot:
            screen = await ready(pilot)
            assert screen.status.server == f"attached to smoltui serve (pid {served.pid})"
            assert smoltui(served.env, "serve", "stop").returncode == 0
            await wait_until(pilot, lambda: "reconnecting" in screen.status.server, "the bar to say so", timeout=10)
            assert screen.status.has_class("-server-down")
            started = smoltui(served.env, "serve", "--detach", "--model", "scripted")
            assert started.returncode == 0, started.stderr
            pid = probe(socket_path(Paths.resolve(served.home)))["pid"]  # type: ignore[index]
            await wait_until(pilot, lambda: screen.status.server == f"attached to smoltui serve (pid {pid})",
                             "the bar to name the new server", timeout=15)
            reply = await send(pilot, "again", timeout=15)  # and the new server answers
            assert reply.markdown == REPLY
    finally:
        await app.core.close()


# -- it outlives the terminal ------------------------------------------------------------------------


class Terminal:
    """The real ``smoltui`` in a tmux session of a private tmux server."""

    def __init__(self, served: Served, tmp_path: Path, name: str) -> None:
        assert TMUX is not None
        self.name = name
        self.socket = tmp_path / f"tmux-{name}"
        self.env = {**served.env, "TERM": "xterm-256color", "SMOLTUI_TEST_STACKS": str(tmp_path / "stacks")}
        self.tmux("new-session", "-d", "-s", name, "-x", "150", "-y", "45", "-c", str(served.project),
                  PYTHON, "-m", "smoltui")
        self.pid = int(self.tmux("list-panes", "-t", name, "-F", "#{pane_pid}").strip())

    def tmux(self, *args: str) -> str:
        done = subprocess.run([TMUX or "tmux", "-S", str(self.socket), "-f", os.devnull, *args], env=self.env, capture_output=True,
                              text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def shows(self, text: str, what: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (screen := self.screen()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the terminal shows:\n{screen}")
            time.sleep(0.05)
        return screen

    def hides(self, text: str, what: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while text in (screen := self.screen()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the terminal shows:\n{screen}")
            time.sleep(0.05)
        return screen

    def kill(self) -> None:
        """Close the terminal as tmux kill-session does: the TUI gets SIGHUP."""
        self.tmux("kill-session", "-t", self.name)
        deadline = time.monotonic() + 15
        while _alive(self.pid):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGUSR1)
                time.sleep(1)
                stacks = Path(f"{self.env['SMOLTUI_TEST_STACKS']}.{self.pid}").read_text()
                raise AssertionError(f"the TUI outlived its terminal:\n{stacks}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-S", str(self.socket), "kill-server"], env=self.env, capture_output=True,
                       timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_tmux
async def test_a_reply_and_a_run_started_in_the_tui_outlive_its_terminal_and_are_answered_when_it_opens_again(
        served_long: Served, tmp_path: Path) -> None:
    served = served_long
    client = served.client()
    terminal = Terminal(served, tmp_path, "outlive")
    try:
        terminal.shows("attached to smoltui serve", "the TUI to attach")
        # A run from the workflow tree (F3, n on the workflow, ctrl+s in the launch dialog) ...
        terminal.keys("F3")
        terminal.shows("n Run…", "the tree to take the keys")
        terminal.shows("Append append", "the workflow in the tree")
        terminal.keys("n")
        terminal.shows("This workflow has no variables", "the launch dialog")
        terminal.keys("C-s")
        [waiting] = await eventually(client.approvals, "the run's call to ask", shown=terminal.screen)
        run_id = waiting["run_id"]
        terminal.shows("awaiting", "the run view with its waiting call")
        # ... and a long reply, from the chat.
        terminal.keys("Escape")
        terminal.shows("n Run…", "the chat, the tree focused as it was left")
        terminal.keys("F3")  # the tree, focused, hides: the message box takes the keys
        terminal.hides("n Run…", "the message box to take the keys")
        terminal.type("count for me")
        terminal.keys("Enter")
        [chat] = await eventually(client.chats, "the chat", shown=terminal.screen)
        await eventually(lambda: _replying_with_words(client, chat["id"]), "the reply to be under way")

        terminal.kill()

        # Both go on without it: the reply is still being written when the TUI has gone.
        assert (await client.chat(chat["id"]))["replying"], "the reply stopped with the terminal"
        run = await client.run(run_id)
        assert run["state"] == "running" and [a["call_id"] for a in run["approvals"]] == [waiting["call_id"]]
        await eventually(lambda: _finished(client, chat["id"]), "the reply to finish on the server")
    finally:
        terminal.close()

    # Opened again: the finished reply, the run's waiting call; answered here, the run ends.
    app = await attached_app(served)
    try:
        async with app.run_test(size=WIDE) as pilot:
            screen = await ready(pilot)
            assert app.pending_approvals == 1
            screen.open_session(chat["id"])
            await wait_until(pilot, lambda: [v.markdown for v in screen.message_views()] == ["count for me", LONG_REPLY],
                             "the finished reply")
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), "the run view")
            run_view = app.screen
            assert isinstance(run_view, RunScreen) and run_view.run_id == run_id
            await wait_until(pilot, lambda: isinstance(app.focused, ApprovalCard), "the waiting call's card")
            await pilot.press("y")
            await wait_until(pilot, lambda: run_view.loaded is not None and run_view.loaded.state == "succeeded",
                             "the run to finish", timeout=15)
            assert not run_view.cards and app.pending_approvals == 0
    finally:
        await app.core.close()
        await client.aclose()
    assert (served.project / "workflows" / "append.txt").read_text() == "ran\n"


async def _replying_with_words(client: ServerClient, session_id: int) -> bool:
    messages = await client.messages(session_id)
    return any(m["role"] == "assistant" and m["content"] for m in messages) and (await client.chat(session_id))["replying"]


async def _finished(client: ServerClient, session_id: int) -> bool:
    if (await client.chat(session_id))["replying"]:
        return False
    reply = [m for m in await client.messages(session_id) if m["role"] == "assistant"]
    assert [(m["content"], m["cut_off"]) for m in reply] == [(LONG_REPLY, False)]
    return True


# -- two TUIs, one approval ---------------------------------------------------------------------------


@needs_tmux
async def test_two_tuis_attached_at_once_see_the_same_approval_and_an_answer_in_one_takes_the_others_card_away(
        served: Served, client: ServerClient, tmp_path: Path) -> None:
    terminal = Terminal(served, tmp_path, "second")
    app = await attached_app(served)
    try:
        terminal.shows("attached to smoltui serve", "the terminal TUI to attach")
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            run = await client.launch(served.workflow())
            await wait_until(pilot, lambda: app.pending_approvals == 1, "the approval in the Pilot TUI", timeout=10)
            terminal.shows("1 waiting", "the approval in the terminal TUI")
            terminal.keys("C-g")
            terminal.shows("Approve", "the card in the terminal TUI")

            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: isinstance(app.focused, ApprovalCard), "the card in the Pilot TUI")
            await pilot.press("y")

            screen = terminal.hides("Approve", "the terminal TUI's card to go away")
            assert "1 waiting" not in screen
            await wait_until(pilot, lambda: app.pending_approvals == 0, "the Pilot TUI's count")
            assert (await eventually(lambda: _state_if_over(client, run["id"]), "the run to end")) == "succeeded"
    finally:
        terminal.close()
        await app.core.close()


async def _state_if_over(client: ServerClient, run_id: str) -> str | None:
    state = (await client.run(run_id))["state"]
    return None if state in ("pending", "running") else state
