from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from smoltui.errors import StoreError
from smoltui.orchestrator import store as store_module
from smoltui.orchestrator.store import HIGHLIGHT_CLOSE, HIGHLIGHT_OPEN, LATEST_VERSION, MIGRATIONS, Store


@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(tmp_path / "data" / "smoltui.db")
    yield s
    s.close()


def test_open_creates_parent_dirs_and_rows_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "smoltui.db"
    store = Store.open(path)
    assert store.path == path
    session = store.create_session("Trip plans", model="SmolLM3-3B")
    store.add_message(session.id, "user", "Where should I go?")
    store.add_message(session.id, "assistant", "Try Lisbon.", thinking="User wants a trip.")
    store.close()

    store = Store.open(path)
    try:
        [again] = store.list_sessions()
        assert (again.id, again.title, again.model, again.message_count) == (
            session.id,
            "Trip plans",
            "SmolLM3-3B",
            2,
        )
        msgs = store.messages(session.id)
        assert [(m.role, m.content, m.thinking) for m in msgs] == [
            ("user", "Where should I go?", None),
            ("assistant", "Try Lisbon.", "User wants a trip."),
        ]
    finally:
        store.close()


def test_wal_foreign_keys_and_schema_version(store: Store) -> None:
    assert store.schema_version() == LATEST_VERSION == MIGRATIONS[-1][0]
    # A second, independent connection sees what is on disk, not what our connection caches.
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_migrations_are_numbered_in_order() -> None:
    numbers = [n for n, _ in MIGRATIONS]
    assert numbers == list(range(1, len(numbers) + 1))


def test_list_sessions_most_recently_updated_first(store: Store) -> None:
    old = store.create_session("old")
    new = store.create_session("new")
    assert [s.id for s in store.list_sessions()] == [new.id, old.id]
    store.add_message(old.id, "user", "bump")
    assert [s.id for s in store.list_sessions()] == [old.id, new.id]
    assert store.get_session(old.id).updated_at >= store.get_session(new.id).updated_at


def test_rename_and_missing_session(store: Store) -> None:
    s = store.create_session()
    assert s.title == "New chat"
    assert store.rename_session(s.id, "Renamed").title == "Renamed"
    assert store.get_session(s.id).title == "Renamed"
    with pytest.raises(StoreError, match="no chat session 999"):
        store.get_session(999)
    with pytest.raises(StoreError, match="no chat session 999"):
        store.add_message(999, "user", "hi")
    with pytest.raises(StoreError, match="no chat session 999"):
        store.rename_session(999, "x")


def test_bad_role_is_rejected(store: Store) -> None:
    s = store.create_session()
    with pytest.raises(ValueError, match="role"):
        store.add_message(s.id, "robot", "beep")
    assert store.messages(s.id) == []


def test_stats_round_trip_and_update_message(store: Store) -> None:
    s = store.create_session()
    stats = {"completion_tokens": 42, "decode_tok_s": 12.3, "ttft_s": 0.41, "nested": {"a": [1, 2]}}
    m = store.add_message(s.id, "assistant", "partial")
    assert m.stats is None
    updated = store.update_message(m.id, "final answer", thinking="pondered", stats=stats)
    assert updated.stats == stats
    [loaded] = store.messages(s.id)
    assert (loaded.content, loaded.thinking, loaded.stats) == ("final answer", "pondered", stats)
    assert isinstance(loaded.stats, dict)
    # The search index follows the edit: the old text is gone, the new text is found.
    assert store.search("partial") == []
    assert [h.message_id for h in store.search("final")] == [m.id]
    with pytest.raises(StoreError, match="no chat message 999"):
        store.update_message(999, "x")


def test_cascade_delete_removes_messages_and_search_hits(store: Store) -> None:
    keep = store.create_session("keep")
    gone = store.create_session("gone")
    store.add_message(keep.id, "user", "zebra in the kept chat")
    store.add_message(gone.id, "user", "zebra in the deleted chat")
    assert len(store.search("zebra")) == 2

    store.delete_session(gone.id)

    assert [s.id for s in store.list_sessions()] == [keep.id]
    assert store.messages(gone.id) == []
    assert [h.session_id for h in store.search("zebra")] == [keep.id]
    count = store._conn.execute("SELECT COUNT(*) FROM messages WHERE session_id = ?", (gone.id,))
    assert count.fetchone()[0] == 0
    # The FTS index itself holds no stale rows (integrity-check fails if it disagrees with messages).
    store._conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")


def test_search_content_and_thinking_across_sessions(store: Store) -> None:
    a = store.create_session("Cooking")
    b = store.create_session("Travel")
    store.add_message(a.id, "user", "How long do I boil an artichoke?")
    reply = store.add_message(a.id, "assistant", "About 30 minutes.", thinking="Artichokes are dense.")
    store.add_message(b.id, "user", "Any artichoke dishes in Rome?")
    store.add_message(b.id, "assistant", "Carciofi alla romana.")

    hits = store.search("artichoke")
    assert {h.session_id for h in hits} == {a.id, b.id}
    assert {h.session_title for h in hits} == {"Cooking", "Travel"}
    assert all(marked("artichoke") in h.snippet.lower() for h in hits if h.message_id != reply.id)

    # Words only in the thinking are found, and the last word matches as a prefix.
    [thought] = store.search("dens")
    assert (thought.message_id, thought.role) == (reply.id, "assistant")
    assert marked("dense") in thought.snippet

    # All words must match.
    assert [h.session_id for h in store.search("artichoke rome")] == [b.id]


def test_search_ignores_diacritics(store: Store) -> None:
    s = store.create_session()
    store.add_message(s.id, "user", "a café in Zürich")
    assert len(store.search("cafe zurich")) == 1


def test_search_matches_session_titles(store: Store) -> None:
    s = store.create_session("Quarterly budget review")
    store.create_session("Something else")
    [hit] = store.search("budget")
    assert (hit.session_id, hit.message_id, hit.role) == (s.id, None, None)
    assert hit.snippet == f"Quarterly {marked('budget')} review"


@pytest.mark.parametrize(
    "query",
    ['"', 'foo"bar', "AND", "OR", "NOT", "a AND", "-", "-x", "*", "foo:bar", "(", ")", "^", "NEAR(a b)",
     "'", "\\", "%", "_", "  ", "", "col:*"],
)
def test_nasty_queries_do_not_raise(store: Store, query: str) -> None:
    s = store.create_session("foo bar")
    store.add_message(s.id, "user", "foo bar baz and or not x")
    hits = store.search(query)
    assert isinstance(hits, list)


def test_punctuation_is_searched_as_text(store: Store) -> None:
    s = store.create_session()
    store.add_message(s.id, "user", "set foo:bar then AND the -x flag")
    assert len(store.search("foo:bar")) == 1
    assert len(store.search("AND")) == 1
    assert len(store.search("-x")) == 1
    assert store.search("") == []
    assert store.search("*") == []


def test_search_limit(store: Store) -> None:
    s = store.create_session()
    for i in range(5):
        store.add_message(s.id, "user", f"needle number {i}")
    assert len(store.search("needle", limit=3)) == 3


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    with pytest.raises(StoreError) as info:
        Store.open(path)
    message = str(info.value)
    assert str(path) in message
    assert f"schema {LATEST_VERSION + 5}, this version knows {LATEST_VERSION}" in message
    assert "upgrade smoltui" in message
    assert "\n" not in message


def test_non_database_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError) as info:
        Store.open(path)
    assert str(path) in str(info.value)
    assert "not a smoltui database" in str(info.value)
    # The user's file is left alone.
    assert path.read_text().startswith("these are my notes")


def test_unwritable_directory_is_refused(tmp_path: Path) -> None:
    # Root ignores permission bits, so make the parent a regular file: no one can create in it.
    blocker = tmp_path / "afile"
    blocker.write_text("")
    path = blocker / "db.sqlite"
    with pytest.raises(StoreError) as info:
        Store.open(path)
    assert f"{blocker} is a file, not a directory" in str(info.value)
    assert "--home" in str(info.value)


def test_directory_in_place_of_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    path.mkdir()
    with pytest.raises(StoreError, match="smoltui.db is a directory"):
        Store.open(path)


def test_write_failure_becomes_store_error(store: Store) -> None:
    s = store.create_session()
    # query_only makes SQLite refuse writes exactly as it does for a read-only file.
    store._conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError) as info:
        store.add_message(s.id, "user", "hello")
    assert str(store.path) in str(info.value)
    assert "read-only" in str(info.value)
    store._conn.execute("PRAGMA query_only = OFF")
    # Nothing was half-written, and the store is still usable afterwards.
    assert store.messages(s.id) == []
    store.add_message(s.id, "user", "hello")
    assert len(store.messages(s.id)) == 1


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "smoltui.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_sessions()


def test_usable_from_several_threads(store: Store) -> None:
    s = store.create_session()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                store.add_message(s.id, "user", f"thread {n} message {i}")
                store.list_sessions()
        except BaseException as err:  # pragma: no cover - only on failure
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_session(s.id).message_count == 80


def test_failed_migration_rolls_back_whole_step(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "smoltui.db"
    Store.open(path).close()
    n = LATEST_VERSION + 1
    broken = (n, "CREATE TABLE runs_broken (id INTEGER PRIMARY KEY); SELECT * FROM no_such_table;")
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, broken])
    monkeypatch.setattr(store_module, "LATEST_VERSION", n)
    with pytest.raises(StoreError, match=f"cannot upgrade .* to schema {n}"):
        Store.open(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "runs_broken" not in tables


def test_concurrent_first_open_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "smoltui.db"
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            Store.open(path).close()
        except BaseException as err:  # pragma: no cover - only on failure
            errors.append(err)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store.open(path) as store:
        assert store.schema_version() == LATEST_VERSION


def marked(word: str) -> str:
    return f"{HIGHLIGHT_OPEN}{word}{HIGHLIGHT_CLOSE}"
