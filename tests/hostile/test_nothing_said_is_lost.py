"""Nothing said is lost: a reply is saved as it streams, so SIGTERM, SIGHUP, SIGINT, esc and even
kill -9 keep what it had said (kill -9: all but the last second), marked cut off, in the chat's
history, its export, the TUI, and the next turn's prompt.

The headless tests run ``smoltui chat`` in a real process over a slow scripted model (the real CLI;
only the model is swapped, the way tests/test_mcp_everywhere.py does) and send it real signals.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import sqlite3
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tui.harness import (  # noqa: F401  (store_fixture provides the store fixture)
    SIZE,
    build_app,
    chat_screen,
    ready,
    scripted,
    send,
    store_fixture,
    type_text,
    wait_until,
)

from smoltui.orchestrator.export import session_to_markdown
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.transcript import Said, load_transcript
from tests.conftest import PYTHON, REPO

WORDS = 3000
REPLY = " ".join(f"w{i}" for i in range(WORDS))
TOKEN_DELAY_S = 0.01

# The real command line, with a model that streams REPLY slowly (a token every 10 ms: 30 s in all,
# far longer than any test waits).
LAUNCHER = f"""
import sys
import smoltui.core
from smoltui.backends.scripted import ScriptedBackend

smoltui.core.build_backend = lambda ref, config, paths: ScriptedBackend([{REPLY!r}], delay_s={TOKEN_DELAY_S})
from smoltui.cli import main
sys.exit(main())
"""


class Chat:
    """``smoltui chat`` running in its own process; stdout read as it arrives, each piece timed."""

    def __init__(self, env: dict[str, str], tmp_path: Path, *args: str) -> None:
        launcher = tmp_path / "launch_smoltui.py"
        launcher.write_text(LAUNCHER)
        self.process = subprocess.Popen(
            [PYTHON, str(launcher), "chat", "-m", "scripted", "--max-tokens", str(WORDS + 10), *args,
             "-p", "count for me"],
            env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pieces: list[tuple[float, bytes]] = []
        self._grew = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, 65536):
            with self._grew:
                self.pieces.append((time.monotonic(), chunk))
                self._grew.notify_all()
        with self._grew:
            self._grew.notify_all()

    @property
    def stdout(self) -> str:
        return b"".join(chunk for _, chunk in self.pieces).decode()

    def printed_by(self, moment: float) -> str:
        return b"".join(chunk for at, chunk in self.pieces if at <= moment).decode()

    def wait_for_words(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` words of the reply have reached stdout."""
        deadline = time.monotonic() + timeout
        with self._grew:
            while len(self.stdout.split()) < count:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{count} words never came; stdout ends {self.stdout[-200:]!r}")
                self._grew.wait(left)

    def finish(self) -> tuple[int, str]:
        """Wait for the process to end: its exit status and stderr."""
        assert self.process.stderr is not None
        err = self.process.stderr.read()  # stdout is the reader thread's
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        return self.process.returncode, err.decode()


def stored_replies(database: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT content, cut_off FROM messages WHERE role = 'assistant'").fetchall()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_mid_reply_keeps_every_word_printed_marked_cut_off(
        sig: signal.Signals, cli_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    chat = Chat(cli_env, tmp_path)
    chat.wait_for_words(40)
    chat.process.send_signal(sig)
    code, err = chat.finish()

    assert code == 128 + sig, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"smoltui: stopped by {sig.name}; the reply so far is kept in chat 1, "
                                        "marked cut off"]
    printed = chat.stdout
    assert printed.endswith("\n") and len(printed.split()) >= 40
    [(content, cut_off)] = stored_replies(home / "smoltui.db")
    # Every word that reached the screen is in the history, and nothing that did not.
    assert content == printed[:-1]
    assert REPLY.startswith(content) and content != REPLY
    assert cut_off == 1


def test_kill_9_mid_reply_loses_at_most_the_last_second(cli_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    chat = Chat(cli_env, tmp_path)
    chat.wait_for_words(250)  # about 2.5 s of reply: a few saves have happened
    killed_at = time.monotonic()
    chat.process.kill()
    chat.finish()

    [(content, cut_off)] = stored_replies(home / "smoltui.db")
    assert cut_off == 1
    assert REPLY.startswith(content) and content
    # All that was on screen a second before the kill is saved (half a second more for a loaded
    # machine's scheduling).
    assert content.startswith(chat.printed_by(killed_at - 1.5).rstrip())
    assert len(content.split()) >= len(chat.printed_by(killed_at - 1.5).split()) > 0


async def test_a_killed_reply_shows_cut_off_in_history_export_tui_and_the_next_prompt(
        cli_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    chat = Chat(cli_env, tmp_path)
    chat.wait_for_words(40)
    chat.process.kill()
    chat.finish()

    async with await Store.open(home / "smoltui.db") as store:
        [user, reply] = await store.messages(1)
        assert (user.role, user.content, reply.role, reply.cut_off) == ("user", "count for me", "assistant", True)
        partial = reply.content
        assert partial and REPLY.startswith(partial)
        entries = await load_transcript(store, 1)
        said = [e for e in entries if isinstance(e, Said) and e.role == "assistant"]
        assert [(e.text, e.cut_off) for e in said] == [(partial, True)]
        assert "*cut off*" in session_to_markdown(await store.get_session(1), entries)

        # The TUI shows it marked, and the next turn's prompt holds it as the user saw it.
        backend = scripted("Picking up from there.")
        app = build_app(store, backend, tmp_path, initial_session=1)
        async with app.run_test(size=SIZE) as pilot:
            screen = await ready(pilot)
            await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the stored chat")
            shown = screen.message_views()[1]
            assert shown.markdown == partial
            assert "cut off" in shown.stats_text
            await send(pilot, "go on")
            assert [(m.role, m.content) for m in backend.prompts[-1][-3:]] == [
                ("user", "count for me"), ("assistant", partial), ("user", "go on")]
            # The new reply ended normally: it carries no mark.
            assert "cut off" not in chat_screen(app).message_views()[-1].stats_text
        rows = await store.messages(1)
        assert [m.cut_off for m in rows] == [False, True, False, False]


async def test_escape_keeps_the_partial_reply_marked_cut_off_in_the_store_and_on_reopen(
        store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted(REPLY, delay_s=0.02), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "count")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the reply view")
        live = screen.message_views()[1]
        await wait_until(pilot, lambda: len(live.markdown.split()) > 10, "some streamed text")
        await pilot.press("escape")
        await wait_until(pilot, lambda: live.finished and not screen.replying, "the reply to stop")
        assert "cut off" in live.stats_text
        session_id = screen.session_id
    [_, row] = await store.messages(session_id)
    assert row.cut_off and row.content and REPLY.startswith(row.content) and row.content != REPLY

    app = build_app(store, scripted("unused"), tmp_path, initial_session=session_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await wait_until(pilot, lambda: len(screen.message_views()) == 2, "the stored chat")
        reopened = screen.message_views()[1]
        assert reopened.markdown == row.content
        assert "cut off" in reopened.stats_text


async def test_a_reply_is_in_the_store_while_it_streams(store: Store, tmp_path: Path) -> None:
    """Saved as it grows, not only at the end: what another process (or a crash) would find."""
    app = build_app(store, scripted(REPLY, delay_s=0.01), tmp_path)
    app.core.chat.settings.save_every_s = 0.2
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "count")
        await pilot.press("enter")

        async def saved_words() -> int:
            if screen.session_id is None:
                return 0
            replies = [m for m in await store.messages(screen.session_id) if m.role == "assistant"]
            return len(replies[0].content.split()) if replies and replies[0].cut_off else 0

        async def until_saved_beyond(words: int) -> int:
            deadline = time.monotonic() + 10
            while (saved := await saved_words()) <= words:
                assert time.monotonic() < deadline, f"the saved reply never grew past {words} words"
                await pilot.pause(0.01)
            return saved

        first = await until_saved_beyond(0)
        await until_saved_beyond(first)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.replying, "the reply to stop")


class Terminal:
    """The TUI (``smoltui``) running in its own process on a pseudo-terminal, its screen output
    collected as it comes."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        launcher = tmp_path / "launch_smoltui.py"
        launcher.write_text(LAUNCHER)
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.master = master
        self.process = subprocess.Popen([PYTHON, str(launcher), "-m", "scripted"], stdin=slave, stdout=slave,
                                        stderr=slave, env={**env, "TERM": "xterm-256color"}, cwd=REPO,
                                        start_new_session=True)
        os.close(slave)
        self.output = bytearray()
        self._grew = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the other end closed: the app has gone
                chunk = b""
            with self._grew:
                if chunk:
                    self.output.extend(chunk)
                self._grew.notify_all()
            if not chunk:
                return

    def wait_for(self, found: Callable[[bytes], object], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._grew:
            while not found(bytes(self.output)):
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"never saw {what}; the screen ends {bytes(self.output[-300:])!r}")
                self._grew.wait(left)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        os.close(self.master)


def last_word_shown(screen: bytes) -> int:
    return max((int(n) for n in re.findall(rb"w(\d+)(?!\d)", screen)), default=-1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_the_tui_quits_on_a_signal_mid_reply_keeping_what_it_showed(
        sig: signal.Signals, cli_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    terminal = Terminal(cli_env, tmp_path)
    try:
        # The status bar names the model once it is loaded: the prompt is ready for keys.
        terminal.wait_for(lambda screen: b"scripted" in screen, "the model ready")
        terminal.type("count\r")
        terminal.wait_for(lambda screen: last_word_shown(screen) >= 30, "the reply on screen")
        shown = last_word_shown(bytes(terminal.output))
        terminal.process.send_signal(sig)
        assert terminal.process.wait(timeout=30) == 128 + sig
        terminal.wait_for(lambda screen: b"\x1b[?1049l" in screen, "the terminal restored (main screen back)")
    finally:
        terminal.close()
    [(content, cut_off)] = stored_replies(home / "smoltui.db")
    assert cut_off == 1
    assert REPLY.startswith(content)
    assert last_word_shown(content.encode()) >= shown  # all that was on screen, and more
