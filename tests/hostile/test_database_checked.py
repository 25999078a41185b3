"""The database is checked, never gambled with: a damaged, foreign or junk file is refused by every
command with one line that names it and says what to do, and is left byte for byte as it was;
``smoltui db check`` and ``smoltui db backup`` exist; a full disk is one line, never a traceback.

Real SQLite files and real ``smoltui`` processes throughout.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smoltui.orchestrator.store import APPLICATION_ID, LATEST_VERSION, MIGRATIONS, Store, inspect_file
from tests.conftest import PYTHON, REPO

SIDE_FILES = ("-wal", "-shm", "-journal")

# Every command that opens the database, as a user would run it.
COMMANDS = {
    "chat": ["chat", "-m", "scripted", "-p", "hi"],
    "runs": ["runs"],
    "logs": ["logs", "some-run"],
    "audit": ["audit"],
    "tui": [],
    "db backup": ["db", "backup", "copy.db"],
}


def smoltui(env: dict[str, str], *args: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "smoltui", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_line(result: subprocess.CompletedProcess) -> str:
    """The single line a refused command prints (asserting there is nothing else)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smoltui: "), result.stderr
    return lines[0]


def fingerprint(path: Path) -> tuple[str, list[str]]:
    """The file's bytes (as a hash) and which side files sit beside it."""
    return (hashlib.sha256(path.read_bytes()).hexdigest(),
            [suffix for suffix in SIDE_FILES if Path(f"{path}{suffix}").exists()])


async def _fill(path: Path, sessions: int = 40, messages: int = 40) -> None:
    async with await Store.open(path) as store:
        for s in range(sessions):
            session = await store.create_session(f"chat {s}")
            for m in range(messages):
                await store.add_message(session.id, "user" if m % 2 == 0 else "assistant", f"message {m} of chat {s}")


def smoltui_database(path: Path) -> Path:
    """A smoltui database with some history (small rows: every page is a b-tree page), its WAL
    folded in, as it is after smoltui closed it."""
    asyncio.run(_fill(path))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in SIDE_FILES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def damage(path: Path) -> None:
    """4 KB of noise over a page in the middle of the file (same noise every run)."""
    page_size = 4096
    with path.open("r+b") as file:
        file.seek(page_size * (path.stat().st_size // page_size // 2))
        file.write(random.Random(12).randbytes(4096))


def foreign_database(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.executemany("INSERT INTO notes (text) VALUES (?)", [(f"note {i}",) for i in range(100)])
    return path


# -- refused at open -----------------------------------------------------------------------------


@pytest.fixture
def damaged(home: Path) -> Path:
    path = smoltui_database(home / "smoltui.db")
    damage(path)
    assert inspect_file(path), "the noise must be something SQLite's quick check finds"
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_database_is_refused_by_every_command_and_left_as_it_was(
        command: str, damaged: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    before = fingerprint(damaged)
    result = smoltui(cli_env, *COMMANDS[command], cwd=tmp_path)
    line = one_line(result)
    assert result.returncode == 5
    assert f"{damaged} is damaged (" in line
    assert "smoltui db check" in line and "restore a backup" in line
    assert fingerprint(damaged) == before
    assert not (tmp_path / "copy.db").exists()


def test_another_programs_database_is_refused_and_gets_no_tables(home: Path, cli_env: dict[str, str]) -> None:
    path = foreign_database(home / "smoltui.db")
    before = fingerprint(path)
    for command in ("chat", "runs", "tui"):
        result = smoltui(cli_env, *COMMANDS[command])
        assert result.returncode == 5
        assert one_line(result) == (f"smoltui: {path} is another program's SQLite database, not smoltui's; it was "
                                    "left untouched: move it away or use --home to point elsewhere")
    assert fingerprint(path) == before
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["notes"]


@pytest.mark.parametrize("junk", [b"x", b"these are my notes, not a database\n" * 50, bytes(range(256)) * 40],
                         ids=["one byte", "text", "binary"])
def test_a_file_that_is_not_a_database_is_refused_not_replaced(
        junk: bytes, home: Path, cli_env: dict[str, str]) -> None:
    path = home / "smoltui.db"
    path.write_bytes(junk)
    for command in ("chat", "audit", "tui"):
        result = smoltui(cli_env, *COMMANDS[command])
        assert result.returncode == 5
        assert f"{path} is not a database (not an SQLite file); it was left untouched" in one_line(result)
    assert path.read_bytes() == junk
    assert fingerprint(path)[1] == []


async def test_a_smoltui_database_from_before_the_mark_is_still_opened_and_gets_marked(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    with sqlite3.connect(path, isolation_level=None) as conn:  # as smoltui wrote it at schema 6
        conn.execute("PRAGMA journal_mode = WAL")
        for version, script in MIGRATIONS:
            if version <= 6:
                conn.executescript(script)
                conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("INSERT INTO sessions (title, created_at, updated_at) VALUES ('old chat', 1, 1)")
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0
    async with await Store.open(path) as store:
        assert [s.title for s in await store.list_sessions()] == ["old chat"]
        assert await store.schema_version() == LATEST_VERSION
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


async def test_an_empty_file_or_none_becomes_a_new_marked_database(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for path in (empty, tmp_path / "missing.db"):
        async with await Store.open(path):
            pass
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_the_quick_check_at_open_is_cheap(tmp_path: Path) -> None:
    """What every open pays for the check, on a history of 1,600 messages (about 1 MB)."""
    path = smoltui_database(tmp_path / "smoltui.db")
    started = time.perf_counter()
    assert inspect_file(path) == []
    assert time.perf_counter() - started < 0.5


# -- smoltui db check / backup -------------------------------------------------------------------


def test_db_check_says_ok_or_lists_the_problems(home: Path, cli_env: dict[str, str]) -> None:
    path = smoltui_database(home / "smoltui.db")
    result = smoltui(cli_env, "db", "check")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{path}: ok\n", "")

    damage(path)
    before = fingerprint(path)
    result = smoltui(cli_env, "db", "check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    first, *problems, advice = result.stdout.strip().splitlines()
    assert first.startswith(f"{path} is damaged: ")
    assert problems and all(p.startswith("  ") for p in problems)
    assert advice == "restore a backup, or move the file away to start a new history"
    assert fingerprint(path) == before

    path.write_bytes(b"junk")
    result = smoltui(cli_env, "db", "check")
    assert result.returncode == 5 and "is not a database" in one_line(result)


WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 10000")
n = 0
print("writing", flush=True)
while True:
    n += 1
    # One transaction: a message and the title that counts the messages, always in step.
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO messages (session_id, role, content, created_at) VALUES (1, 'user', ?, 0)",
                 ("x" * 2000 + str(n),))
    conn.execute("UPDATE sessions SET title = (SELECT COUNT(*) FROM messages WHERE session_id = 1) WHERE id = 1")
    conn.execute("COMMIT")
"""


async def _one_session(path: Path) -> None:
    async with await Store.open(path) as store:
        await store.create_session("0")


def test_db_backup_is_a_consistent_smoltui_database_while_another_process_writes(
        home: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = home / "smoltui.db"
    asyncio.run(_one_session(path))
    writer = subprocess.Popen([PYTHON, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        copies = []
        for i in range(3):
            copy = tmp_path / f"backup-{i}.db"
            result = smoltui(cli_env, "db", "backup", str(copy))
            assert (result.returncode, result.stderr) == (0, ""), result.stderr
            assert result.stdout == f"backed up {path} to {copy}\n"
            copies.append(copy)
    finally:
        writer.kill()
        writer.wait()
    counts = []
    for copy in copies:
        assert [suffix for suffix in SIDE_FILES if Path(f"{copy}{suffix}").exists()] == []  # one file to keep
        assert inspect_file(copy, thorough=True) == []
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            title, count = conn.execute(
                "SELECT title, (SELECT COUNT(*) FROM messages WHERE session_id = 1) FROM sessions").fetchone()
        assert int(title) == count  # one moment's snapshot, never half a transaction
        counts.append(count)
    assert counts[-1] > 0

    async def opens() -> int:
        async with await Store.open(copies[-1]) as store:
            return (await store.get_session(1)).message_count
    assert asyncio.run(opens()) == counts[-1]


def test_db_backup_never_overwrites_a_file_unless_forced(home: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    smoltui_database(home / "smoltui.db")
    existing = tmp_path / "precious.db"
    existing.write_text("keep me")
    result = smoltui(cli_env, "db", "backup", str(existing))
    assert result.returncode == 5
    assert one_line(result) == f"smoltui: {existing} already exists; choose another name or add --force to replace it"
    assert existing.read_text() == "keep me"

    result = smoltui(cli_env, "db", "backup", "--force", str(existing))
    assert result.returncode == 0, result.stderr
    assert inspect_file(existing) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


# -- a full disk -----------------------------------------------------------------------------------

LONG_REPLY = " ".join(f"w{i}" for i in range(3000))
LAUNCHER = f"""
import sys
import smoltui.core
from smoltui.backends.scripted import ScriptedBackend

smoltui.core.build_backend = lambda ref, config, paths: ScriptedBackend([{LONG_REPLY!r}], delay_s=0.01)
from smoltui.cli import main
sys.exit(main())
"""


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "-o", "size=64k",
                             "tmpfs", str(probe)], capture_output=True, timeout=10)
    return result.returncode == 0


def test_a_full_disk_mid_reply_is_one_line_and_the_reply_is_still_printed(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    """A real full disk: the home is a 2 MB tmpfs (in a mount namespace of the command's own) that
    the test fills once the reply has begun."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs here (needs unshare and mount permission)")
    home = tmp_path / "small-disk"
    home.mkdir()
    launcher = tmp_path / "launch_smoltui.py"
    launcher.write_text(LAUNCHER)
    mount_then_run = 'mount -t tmpfs -o size=2m tmpfs "$0" && exec "$@"'
    process = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", mount_then_run, str(home),
         PYTHON, str(launcher), "chat", "-m", "scripted", "--max-tokens", "300", "-p", "count"],
        env={**cli_env, "SMOLTUI_HOME": str(home)}, cwd=REPO, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    try:
        first = process.stdout.read1(4096)  # the reply has begun: its row is saved
        assert first.startswith(b"w0"), first
        # The command's view of its home, through its own mount namespace.
        filler = Path(f"/proc/{process.pid}/root{home}/filler")
        with filler.open("wb", buffering=0) as file, pytest.raises(OSError) as full:
            while True:
                file.write(b"\0" * 65536)
        assert full.value.errno == errno.ENOSPC
        rest, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    printed = (first + rest).decode()
    assert printed.split() == LONG_REPLY.split()[:300]  # every word still reached the screen
    assert "Traceback" not in err.decode() and "Logging error" not in err.decode()
    assert err.decode().strip().splitlines() == [
        f"smoltui: the reply was not saved: cannot write to {home / 'smoltui.db'}: the disk is full; "
        "free some space and try again"]
    assert process.returncode == 6


def test_a_full_disk_in_the_log_file_or_the_store_is_one_line(cli_env: dict[str, str], home: Path) -> None:
    """Without a real small disk: SQLite's and the OS's disk-full errors injected where they come
    from (the store's transactions, the log file's writes), in a real process."""
    script = """
import errno, logging, sqlite3, sys
import smoltui.orchestrator.store as store
from smoltui.cli import main

real = store._in_transaction
def full(conn, work):
    if sys.argv[1] == "store" and conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] >= 1:
        raise sqlite3.OperationalError("database or disk is full")
    return real(conn, work)
store._in_transaction = full

class FullStream:
    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")
    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

real_setup = __import__("smoltui.core", fromlist=["setup_logging"]).setup_logging
def setup(paths):
    real_setup(paths)
    for handler in logging.getLogger().handlers:
        handler.setStream(FullStream())
    logging.getLogger("smoltui").warning("a line the full disk cannot take")
__import__("smoltui.core").core.setup_logging = setup
sys.exit(main(["chat", "-m", "scripted", "-p", "hi"]))
"""
    for where in ("store", "log"):
        result = subprocess.run([PYTHON, "-c", script, where], env=cli_env, cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert "Traceback" not in result.stderr and "Logging error" not in result.stderr, result.stderr
        if where == "store":
            assert result.returncode == 6
            assert one_line(result).endswith("the disk is full; free some space and try again")
            assert result.stdout.startswith("Hello! I am a **scripted** model")  # the reply still shown
        else:
            assert (result.returncode, result.stderr) == (0, "")

