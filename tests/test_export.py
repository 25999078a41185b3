from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from smoltui.errors import StoreError
from smoltui.orchestrator import export
from smoltui.orchestrator.export import export_session, session_to_markdown, slugify
from smoltui.orchestrator.store import MessageToolCall, Session, Store
from smoltui.orchestrator.transcript import Said

CREATED = 1_700_000_000.0
DATE = datetime.fromtimestamp(CREATED).strftime("%Y-%m-%d %H:%M")


def _msg(mid: int, role: str, content: str, thinking: str | None = None, stats: dict | None = None):
    return Said(mid, role, content, thinking, stats, CREATED + mid)


SESSION = Session(1, "My Title", "SmolLM3-3B", CREATED, CREATED + 10, 4)
MESSAGES = [
    _msg(1, "system", "Be brief."),
    _msg(2, "user", "What is 2+2?"),
    _msg(
        3,
        "assistant",
        "4",
        thinking="Simple arithmetic.",
        stats={"completion_tokens": 42, "decode_tok_s": 12.345, "ttft_s": 0.4123},
    ),
    _msg(4, "assistant", "No stats here."),
]


def test_markdown_layout() -> None:
    md = session_to_markdown(SESSION, MESSAGES)
    assert md == (
        "# My Title\n\n"
        f"*Model: SmolLM3-3B · {DATE}*\n\n"
        "### System\n\n"
        "Be brief.\n\n"
        "### You\n\n"
        "What is 2+2?\n\n"
        "### Assistant\n\n"
        "<details><summary>Thinking</summary>\n\nSimple arithmetic.\n\n</details>\n\n"
        "4\n\n"
        "*42 tokens · 12.3 tok/s · TTFT 0.41 s*\n\n"
        "### Assistant\n\n"
        "No stats here.\n"
    )


def test_markdown_without_thinking_or_model() -> None:
    session = Session(1, "", None, CREATED, CREATED, 1)
    md = session_to_markdown(session, MESSAGES[2:3], include_thinking=False)
    assert md.startswith(f"# Untitled chat\n\n*{DATE}*\n\n### Assistant\n\n4\n\n")
    assert "Thinking" not in md
    assert "Simple arithmetic" not in md


def test_partial_stats_show_only_known_keys() -> None:
    md = session_to_markdown(SESSION, [_msg(1, "assistant", "hi", stats={"decode_tok_s": 8.0, "x": 1})])
    assert md.endswith("hi\n\n*8.0 tok/s*\n")


async def _stored_session(tmp_path: Path) -> tuple[Store, int]:
    store = await Store.open(tmp_path / "db" / "smoltui.db")
    s = await store.create_session("Plans for: the Weekend!", model="SmolLM2-135M")
    await store.add_message(s.id, "user", "Any ideas?")
    await store.add_message(s.id, "assistant", "A hike.", stats={"completion_tokens": 3})
    return store, s.id


async def test_export_into_directory_names_file_from_title(tmp_path: Path) -> None:
    store, sid = await _stored_session(tmp_path)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    try:
        written = await export_session(store, sid, out_dir)
    finally:
        await store.close()
    assert written == out_dir / f"chat-{sid}-plans-for-the-weekend.md"
    text = written.read_text(encoding="utf-8")
    assert text.startswith("# Plans for: the Weekend!\n\n*Model: SmolLM2-135M · ")
    assert "### You\n\nAny ideas?\n\n### Assistant\n\nA hike.\n\n*3 tokens*\n" in text
    assert os.listdir(out_dir) == [written.name]


async def test_export_to_file_replaces_it_whole(tmp_path: Path) -> None:
    store, sid = await _stored_session(tmp_path)
    dest = tmp_path / "chat.md"
    dest.write_text("old content")
    try:
        assert await export_session(store, sid, dest) == dest
    finally:
        await store.close()
    assert dest.read_text(encoding="utf-8").startswith("# Plans for: the Weekend!")
    assert sorted(os.listdir(tmp_path)) == ["chat.md", "db"]


async def test_failed_export_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    store, sid = await _stored_session(tmp_path)
    dest = tmp_path / "chat.md"
    dest.write_text("old content")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "replace", broken_replace)
    try:
        with pytest.raises(StoreError) as info:
            await export_session(store, sid, dest)
    finally:
        await store.close()
    assert str(dest) in str(info.value)
    assert "No space left on device" in str(info.value)
    assert dest.read_text() == "old content"
    assert sorted(os.listdir(tmp_path)) == ["chat.md", "db"]


async def test_export_to_missing_directory_names_path(tmp_path: Path) -> None:
    store, sid = await _stored_session(tmp_path)
    dest = tmp_path / "nope" / "chat.md"
    try:
        with pytest.raises(StoreError, match="nope"):
            await export_session(store, sid, dest)
    finally:
        await store.close()


async def test_export_missing_session(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "smoltui.db")
    try:
        with pytest.raises(StoreError, match="no chat session 7"):
            await export_session(store, 7, tmp_path)
    finally:
        await store.close()


def test_slugify() -> None:
    assert slugify("My Title") == "my-title"
    assert slugify("  --Hello, World!--  ") == "hello-world"
    assert slugify("여행 계획") == "여행-계획"
    assert slugify("!!!") == "untitled"
    assert len(slugify("x" * 200)) == 60


async def test_export_shows_a_call_with_the_arguments_it_ran_with(tmp_path: Path) -> None:
    # The reply is stored as the model wrote it (markup included); the file shows the call as it
    # ran: with the path the user put in its place, who decided, and its outcome.
    markup = '<tool_call>\n{"name": "write_file", "arguments": {"path": "a.txt"}}\n</tool_call>'
    async with await Store.open(tmp_path / "smoltui.db") as store:
        s = await store.create_session("Save it", model="SmolLM2-135M")
        await store.add_message(s.id, "user", "Save a note")
        reply = await store.add_message(
            s.id, "assistant", f"Saving.\n{markup}",
            tool_calls=[MessageToolCall(0, 0, "c1", "write_file", '{"path": "a.txt"}', None)])
        result = await store.add_message(s.id, "tool", "wrote b.txt")
        await store.settle_tool_call(reply.id, "c1", ok=True, summary="wrote b.txt", decision="edit",
                                     decided_by="user", result_message_id=result.id,
                                     arguments='{"path": "b.txt"}')
        text = (await export_session(store, s.id, tmp_path / "chat.md")).read_text(encoding="utf-8")
    assert "<tool_call>" not in text and "a.txt" not in text
    assert "### Assistant\n\nSaving.\n\n**Tool call** `write_file` (edit by user)" in text
    assert '"path": "b.txt"' in text and "✓ wrote b.txt" in text
