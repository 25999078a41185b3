from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from smoltui.errors import DatabaseRefused, StoreError
from smoltui.orchestrator import store as store_module
from smoltui.orchestrator.store import (
    HIGHLIGHT_CLOSE,
    HIGHLIGHT_OPEN,
    LATEST_VERSION,
    MIGRATIONS,
    MessageToolCall,
    Store,
)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "data" / "smoltui.db")
    yield s
    await s.close()


async def test_open_creates_parent_dirs_and_rows_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "smoltui.db"
    store = await Store.open(path)
    assert store.path == path
    session = await store.create_session("Trip plans", model="SmolLM3-3B")
    await store.add_message(session.id, "user", "Where should I go?")
    await store.add_message(session.id, "assistant", "Try Lisbon.", thinking="User wants a trip.")
    await store.close()

    store = await Store.open(path)
    try:
        [again] = await store.list_sessions()
        assert (again.id, again.title, again.model, again.message_count) == (
            session.id,
            "Trip plans",
            "SmolLM3-3B",
            2,
        )
        msgs = await store.messages(session.id)
        assert [(m.role, m.content, m.thinking) for m in msgs] == [
            ("user", "Where should I go?", None),
            ("assistant", "Try Lisbon.", "User wants a trip."),
        ]
    finally:
        await store.close()


async def test_wal_foreign_keys_and_schema_version(store: Store) -> None:
    assert await store.schema_version() == LATEST_VERSION == MIGRATIONS[-1][0]
    # A second, independent connection sees what is on disk, not what our connection caches.
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    assert await store.fetch("PRAGMA foreign_keys") == [(1,)]


def test_migrations_are_numbered_in_order() -> None:
    numbers = [n for n, _ in MIGRATIONS]
    assert numbers == list(range(1, len(numbers) + 1))


async def test_list_sessions_most_recently_updated_first(store: Store) -> None:
    old = await store.create_session("old")
    new = await store.create_session("new")
    assert [s.id for s in await store.list_sessions()] == [new.id, old.id]
    await store.add_message(old.id, "user", "bump")
    assert [s.id for s in await store.list_sessions()] == [old.id, new.id]
    assert (await store.get_session(old.id)).updated_at >= (await store.get_session(new.id)).updated_at


async def test_rename_and_missing_session(store: Store) -> None:
    s = await store.create_session()
    assert s.title == "New chat"
    assert (await store.rename_session(s.id, "Renamed")).title == "Renamed"
    assert (await store.get_session(s.id)).title == "Renamed"
    with pytest.raises(StoreError, match="no chat session 999"):
        await store.get_session(999)
    with pytest.raises(StoreError, match="no chat session 999"):
        await store.add_message(999, "user", "hi")
    with pytest.raises(StoreError, match="no chat session 999"):
        await store.rename_session(999, "x")


async def test_bad_role_is_rejected(store: Store) -> None:
    s = await store.create_session()
    with pytest.raises(ValueError, match="role"):
        await store.add_message(s.id, "robot", "beep")
    assert await store.messages(s.id) == []


async def test_stats_round_trip_and_update_message(store: Store) -> None:
    s = await store.create_session()
    stats = {"completion_tokens": 42, "decode_tok_s": 12.3, "ttft_s": 0.41, "nested": {"a": [1, 2]}}
    m = await store.add_message(s.id, "assistant", "partial")
    assert m.stats is None
    updated = await store.update_message(m.id, "final answer", thinking="pondered", stats=stats)
    assert updated.stats == stats
    [loaded] = await store.messages(s.id)
    assert (loaded.content, loaded.thinking, loaded.stats) == ("final answer", "pondered", stats)
    assert isinstance(loaded.stats, dict)
    # The search index follows the edit: the old text is gone, the new text is found.
    assert await store.search("partial") == []
    assert [h.message_id for h in await store.search("final")] == [m.id]
    with pytest.raises(StoreError, match="no chat message 999"):
        await store.update_message(999, "x")


async def test_cascade_delete_removes_messages_and_search_hits(store: Store) -> None:
    keep = await store.create_session("keep")
    gone = await store.create_session("gone")
    await store.add_message(keep.id, "user", "zebra in the kept chat")
    await store.add_message(gone.id, "user", "zebra in the deleted chat")
    assert len(await store.search("zebra")) == 2

    await store.delete_session(gone.id)

    assert [s.id for s in await store.list_sessions()] == [keep.id]
    assert await store.messages(gone.id) == []
    assert [h.session_id for h in await store.search("zebra")] == [keep.id]
    assert await store.fetch("SELECT COUNT(*) FROM messages WHERE session_id = ?", (gone.id,)) == [(0,)]
    # The FTS index itself holds no stale rows (integrity-check fails if it disagrees with messages).
    await store.write(lambda conn: conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')"))


async def test_search_content_and_thinking_across_sessions(store: Store) -> None:
    a = await store.create_session("Cooking")
    b = await store.create_session("Travel")
    await store.add_message(a.id, "user", "How long do I boil an artichoke?")
    reply = await store.add_message(a.id, "assistant", "About 30 minutes.", thinking="Artichokes are dense.")
    await store.add_message(b.id, "user", "Any artichoke dishes in Rome?")
    await store.add_message(b.id, "assistant", "Carciofi alla romana.")

    hits = await store.search("artichoke")
    assert {h.session_id for h in hits} == {a.id, b.id}
    assert {h.session_title for h in hits} == {"Cooking", "Travel"}
    assert all(marked("artichoke") in h.snippet.lower() for h in hits if h.message_id != reply.id)

    # Words only in the thinking are found, and the last word matches as a prefix.
    [thought] = await store.search("dens")
    assert (thought.message_id, thought.role) == (reply.id, "assistant")
    assert marked("dense") in thought.snippet

    # All words must match.
    assert [h.session_id for h in await store.search("artichoke rome")] == [b.id]


async def test_search_ignores_diacritics(store: Store) -> None:
    s = await store.create_session()
    await store.add_message(s.id, "user", "a café in Zürich")
    assert len(await store.search("cafe zurich")) == 1


async def test_search_matches_session_titles(store: Store) -> None:
    s = await store.create_session("Quarterly budget review")
    await store.create_session("Something else")
    [hit] = await store.search("budget")
    assert (hit.session_id, hit.message_id, hit.role) == (s.id, None, None)
    assert hit.snippet == f"Quarterly {marked('budget')} review"


@pytest.mark.parametrize(
    "query",
    ['"', 'foo"bar', "AND", "OR", "NOT", "a AND", "-", "-x", "*", "foo:bar", "(", ")", "^", "NEAR(a b)",
     "'", "\\", "%", "_", "  ", "", "col:*"],
)
async def test_nasty_queries_do_not_raise(store: Store, query: str) -> None:
    s = await store.create_session("foo bar")
    await store.add_message(s.id, "user", "foo bar baz and or not x")
    hits = await store.search(query)
    assert isinstance(hits, list)


async def test_punctuation_is_searched_as_text(store: Store) -> None:
    s = await store.create_session()
    await store.add_message(s.id, "user", "set foo:bar then AND the -x flag")
    assert len(await store.search("foo:bar")) == 1
    assert len(await store.search("AND")) == 1
    assert len(await store.search("-x")) == 1
    assert await store.search("") == []
    assert await store.search("*") == []


async def test_search_limit(store: Store) -> None:
    s = await store.create_session()
    for i in range(5):
        await store.add_message(s.id, "user", f"needle number {i}")
    assert len(await store.search("needle", limit=3)) == 3


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    await (await Store.open(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    message = str(info.value)
    assert str(path) in message
    assert f"schema {LATEST_VERSION + 5}, this version knows {LATEST_VERSION}" in message
    assert "upgrade smoltui" in message
    assert "\n" not in message


async def test_non_database_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(DatabaseRefused) as info:
        await Store.open(path)
    assert str(path) in str(info.value)
    assert "is not a database" in str(info.value)
    # The user's file is left alone.
    assert path.read_text().startswith("these are my notes")


async def test_unwritable_directory_is_refused(tmp_path: Path) -> None:
    # Root ignores permission bits, so make the parent a regular file: no one can create in it.
    blocker = tmp_path / "afile"
    blocker.write_text("")
    path = blocker / "db.sqlite"
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    assert f"{blocker} is a file, not a directory" in str(info.value)
    assert "--home" in str(info.value)


async def test_directory_in_place_of_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    path.mkdir()
    with pytest.raises(StoreError, match="smoltui.db is a directory"):
        await Store.open(path)


async def test_write_failure_becomes_store_error(store: Store) -> None:
    s = await store.create_session()
    # query_only makes SQLite refuse writes exactly as it does for a read-only file.
    await store.fetch("PRAGMA query_only = ON")
    with pytest.raises(StoreError) as info:
        await store.add_message(s.id, "user", "hello")
    assert str(store.path) in str(info.value)
    assert "read-only" in str(info.value)
    await store.fetch("PRAGMA query_only = OFF")
    # Nothing was half-written, and the store is still usable afterwards.
    assert await store.messages(s.id) == []
    await store.add_message(s.id, "user", "hello")
    assert len(await store.messages(s.id)) == 1


async def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "smoltui.db")
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.list_sessions()


async def test_usable_from_several_coroutines_at_once(store: Store) -> None:
    s = await store.create_session()

    async def worker(n: int) -> None:
        for i in range(20):
            await store.add_message(s.id, "user", f"worker {n} message {i}")
            await store.list_sessions()

    await asyncio.gather(*(worker(n) for n in range(4)))
    assert (await store.get_session(s.id)).message_count == 80
    # Each worker's messages are all there, in the order it wrote them.
    texts = [m.content for m in await store.messages(s.id)]
    for n in range(4):
        assert [t for t in texts if t.startswith(f"worker {n} ")] == [f"worker {n} message {i}" for i in range(20)]


async def test_failed_migration_rolls_back_whole_step(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "smoltui.db"
    await (await Store.open(path)).close()
    n = LATEST_VERSION + 1
    broken = (n, "CREATE TABLE runs_broken (id INTEGER PRIMARY KEY); SELECT * FROM no_such_table;")
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, broken])
    monkeypatch.setattr(store_module, "LATEST_VERSION", n)
    with pytest.raises(StoreError, match=f"cannot upgrade .* to schema {n}"):
        await Store.open(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "runs_broken" not in tables


async def test_concurrent_first_open_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    # Each open prepares the file on a thread and connection of its own, as separate processes would.
    opened = await asyncio.gather(*(Store.open(path) for _ in range(6)))
    for store in opened:
        await store.close()
    async with await Store.open(path) as store:
        assert await store.schema_version() == LATEST_VERSION


# -- tool calls beside their replies (migration 6) ----------------------------------------------------


def _database_at_schema_5(path: Path) -> None:
    """A file as smoltui wrote it before migration 6: calls only as markup in the replies."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        for version, script in MIGRATIONS[:5]:
            conn.executescript(script)
            conn.execute(f"PRAGMA user_version = {version}")


async def test_migration_6_turns_old_markup_into_call_rows_and_a_transcript(tmp_path: Path) -> None:
    from smoltui.orchestrator.transcript import Called, Said, load_transcript

    path = tmp_path / "smoltui.db"
    _database_at_schema_5(path)
    reply = (
        "Let me look both up.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        '<tool_call>\n{"name": "read_file", "arguments": {"path": "notes.txt"}}\n</tool_call>'
    )
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("INSERT INTO sessions (id, title, created_at, updated_at) VALUES (1, 'Old chat', 1, 1)")
        rows = [
            (1, "user", "Weather in Paris, and my notes?"),
            (2, "assistant", reply),
            (3, "tool", json.dumps({"name": "get_weather", "result": "sunny, 21 C"})),
            (4, "tool", json.dumps({"name": "read_file", "error": "no file notes.txt", "kind": "not_found"})),
            (5, "assistant", "Sunny in Paris; I could not find your notes."),
        ]
        conn.executemany("INSERT INTO messages (id, session_id, role, content, created_at) VALUES (?, 1, ?, ?, 1)",
                         rows)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 5

    async with await Store.open(path) as store:
        assert await store.schema_version() == LATEST_VERSION
        weather, read = await store.message_tool_calls(1)
        assert (weather.message_id, weather.position, weather.name) == (2, 0, "get_weather")
        assert json.loads(weather.arguments) == {"city": "Paris"}
        assert (weather.ok, weather.summary, weather.result_message_id, weather.error) == (True, "sunny, 21 C", 3, None)
        assert (read.message_id, read.position, read.name) == (2, 1, "read_file")
        assert json.loads(read.arguments) == {"path": "notes.txt"}
        assert (read.ok, read.summary, read.result_message_id) == (False, "no file notes.txt", 4)
        assert weather.call_id != read.call_id
        # The reply keeps its markup (the next prompt must render the tokens the KV cache holds).
        assert (await store.messages(1))[1].content == reply

        entries = await load_transcript(store, 1)
        assert [type(e) for e in entries] == [Said, Said, Called, Called, Said]
        assert [e.text for e in entries if isinstance(e, Said)] == [
            "Weather in Paris, and my notes?", "Let me look both up.", "Sunny in Paris; I could not find your notes."]
        called = [(e.name, json.loads(e.arguments), e.ok, e.summary) for e in entries if isinstance(e, Called)]
        assert called == [("get_weather", {"city": "Paris"}, True, "sunny, 21 C"),
                          ("read_file", {"path": "notes.txt"}, False, "no file notes.txt")]


async def test_settled_call_keeps_the_edited_arguments_that_ran(store: Store) -> None:
    s = await store.create_session()
    proposed = MessageToolCall(0, 0, "call-1", "write_file", json.dumps({"path": "a.txt", "text": "hi"}))
    untouched = MessageToolCall(0, 1, "call-2", "read_file", json.dumps({"path": "b.txt"}))
    reply = await store.add_message(s.id, "assistant", "<tool_call>…</tool_call>", tool_calls=[proposed, untouched])
    first = await store.add_message(s.id, "tool", json.dumps({"name": "write_file", "result": "written"}))
    second = await store.add_message(s.id, "tool", json.dumps({"name": "read_file", "result": "text"}))

    await store.settle_tool_call(reply.id, "call-1", ok=True, summary="written", decision="edit",
                                 decided_by="user", result_message_id=first.id,
                                 arguments=json.dumps({"path": "c.txt", "text": "hi"}))
    await store.settle_tool_call(reply.id, "call-2", ok=True, summary="text", decision="auto",
                                 decided_by="policy", result_message_id=second.id)

    edited, plain = await store.message_tool_calls(s.id)
    assert json.loads(edited.arguments) == {"path": "c.txt", "text": "hi"}
    assert (edited.ok, edited.summary, edited.decision, edited.decided_by, edited.result_message_id) == (
        True, "written", "edit", "user", first.id)
    assert json.loads(plain.arguments) == {"path": "b.txt"}  # not edited: the model's arguments stay
    assert (plain.decision, plain.decided_by, plain.result_message_id) == ("auto", "policy", second.id)


def marked(word: str) -> str:
    return f"{HIGHLIGHT_OPEN}{word}{HIGHLIGHT_CLOSE}"
