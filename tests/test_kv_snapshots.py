"""Conversations kept in RAM while the one llama.cpp context serves another chat, a plan or a task."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoltui.backends.base import ChatMessage, GenerationParams
from smoltui.backends.kv_snapshots import KVSnapshots, Snapshot, SnapshotFolder

GREEDY = GenerationParams(max_tokens=24, temperature=0.0, seed=7)


def snap(tokens: range | list[int], size: int = 10) -> Snapshot:
    return Snapshot(tuple(tokens), b"x" * size)


def test_the_longest_shared_prefix_wins() -> None:
    kept = KVSnapshots(1000, min_tokens=1)
    a, b = snap([1, 2, 3, 4, 5]), snap([1, 2, 9, 9])
    kept.add(a)
    kept.add(b)
    assert kept.best([1, 2, 3, 4, 7]) == (a, 4)
    assert kept.best([1, 2, 9, 9, 9]) == (b, 4)
    assert kept.best([8]) == (None, 0)


def test_a_conversation_that_grew_replaces_its_earlier_copy() -> None:
    kept = KVSnapshots(1000, min_tokens=1)
    kept.add(snap([1, 2, 3]))
    longer = snap([1, 2, 3, 4, 5])
    kept.add(longer)
    assert kept.snapshots == (longer,)
    kept.add(snap([1, 2, 3]))  # held by the longer one already
    assert kept.snapshots == (longer,)


def test_the_least_recently_used_goes_first_when_over_budget() -> None:
    kept = KVSnapshots(25, min_tokens=1)
    a, b, c = snap([1]), snap([2]), snap([3])
    kept.add(a)
    kept.add(b)
    kept.touch(a)  # a used again: b is now the oldest
    kept.add(c)
    assert kept.snapshots == (a, c) and kept.size == 20
    kept.add(snap([4], size=26))  # larger than the whole budget: not kept, nothing evicted for it
    assert kept.snapshots == (a, c)


@pytest.fixture(scope="module")
def backends(bundled_model: Path):
    """Two backends on the bundled GGUF: one keeping conversations in RAM, one not (no disk cache)."""
    pytest.importorskip("llama_cpp")
    import asyncio

    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    keeping = LlamaCppBackend(bundled_model, LlamaSettings(n_ctx=2048, n_threads=2))
    forgetting = LlamaCppBackend(bundled_model, LlamaSettings(n_ctx=2048, n_threads=2, kv_keep_bytes=0))
    asyncio.run(keeping.load())
    asyncio.run(forgetting.load())
    yield keeping, forgetting
    asyncio.run(keeping.close())
    asyncio.run(forgetting.close())


CHAT_A = [
    ChatMessage("system", "You are a patient cooking teacher. Explain each step of a recipe plainly. " * 3),
    ChatMessage("user", "How do I make a simple tomato soup?"),
]
CHAT_B = [
    ChatMessage("system", "You translate English into French. Reply with the translation only. " * 3),
    ChatMessage("user", "The weather is lovely today."),
]


def fresh(backend) -> None:  # noqa: ANN001
    backend.llama.reset()
    backend.llama._ctx.kv_cache_clear()
    backend.kept.clear()


@pytest.mark.llama
async def test_coming_back_to_a_chat_does_not_prefill_it_again(backends) -> None:  # noqa: ANN001
    from test_llama_backend import reply

    keeping, forgetting = backends
    for backend in (keeping, forgetting):
        fresh(backend)
        text_a, first = await reply(backend, CHAT_A)
        await reply(backend, CHAT_B)  # another chat (a plan, a workflow task) takes the context
        follow_up = [*CHAT_A, ChatMessage("assistant", text_a), ChatMessage("user", "Can I add basil?")]
        _, back = await reply(backend, follow_up)
        if backend is keeping:
            assert backend.last_restored_tokens >= first.prompt_tokens
            assert back.cached_tokens >= first.prompt_tokens + first.completion_tokens - 2
            # chat B, kept in turn when A came back, and A's copy (replaced when A grows and leaves again)
            assert len(backend.kept) == 2
        else:
            assert backend.last_restored_tokens == 0
            assert back.cached_tokens < 10  # only the chat markup both prompts open with


@pytest.mark.llama
async def test_a_restored_chat_replies_exactly_as_if_it_had_never_left(backends) -> None:  # noqa: ANN001
    from test_llama_backend import reply

    keeping, _ = backends
    fresh(keeping)
    text_a, _ = await reply(keeping, CHAT_A)
    follow_up = [*CHAT_A, ChatMessage("assistant", text_a), ChatMessage("user", "Can I add basil?")]
    never_left, _ = await reply(keeping, follow_up)

    fresh(keeping)
    assert (await reply(keeping, CHAT_A))[0] == text_a
    await reply(keeping, CHAT_B)
    came_back, stats = await reply(keeping, follow_up)
    assert keeping.last_restored_tokens > 0
    assert came_back == never_left  # the same KV state, bit for bit: the same greedy tokens


@pytest.mark.llama
async def test_a_kept_state_llama_cpp_refuses_is_dropped_and_the_reply_goes_on(backends) -> None:  # noqa: ANN001
    from test_llama_backend import reply

    keeping, _ = backends
    fresh(keeping)
    tokens = keeping.prepare(CHAT_A, GREEDY).tokens
    keeping.kept.add(Snapshot(tuple(tokens[:-1]), b"not a state" * 10))
    text, stats = await reply(keeping, CHAT_A)
    assert text.strip()
    assert keeping.last_restored_tokens == 0 and stats.cached_tokens == 0
    assert len(keeping.kept) == 0


# -- kept across runs ---------------------------------------------------------------------------------


def folder_of(tmp_path: Path, budget: int = 10_000, **kwargs) -> SnapshotFolder:  # noqa: ANN003
    return SnapshotFolder(tmp_path, "conv-test", budget, min_tokens=3, **kwargs)


def test_a_saved_conversation_is_found_by_its_prefix_and_read_back(tmp_path: Path) -> None:
    saved = folder_of(tmp_path)
    a = Snapshot((1, 2, 3, 4, 5), b"state-a")
    assert saved.save([a, snap([1, 2])]) == 1  # two tokens: too short to be worth a file
    path, shared = saved.best([1, 2, 3, 4, 9, 9])
    assert shared == 4
    assert saved.load(path) == a


def test_a_longer_copy_of_a_chat_replaces_the_saved_one_and_nothing_is_written_twice(tmp_path: Path) -> None:
    saved = folder_of(tmp_path)
    saved.save([Snapshot((1, 2, 3), b"short")])
    assert saved.save([Snapshot((1, 2, 3, 4), b"longer")]) == 1
    assert [tokens for _, tokens in saved.token_lists()] == [(1, 2, 3, 4)]
    assert saved.save([Snapshot((1, 2, 3, 4), b"longer"), Snapshot((1, 2, 3), b"short")]) == 0
    assert len(list(tmp_path.iterdir())) == 2  # one state file, one token file


def test_the_least_recently_used_saved_chats_go_past_the_budget(tmp_path: Path) -> None:
    import os

    saved = folder_of(tmp_path, budget=200, per_close=2)
    assert saved.save([Snapshot((1, 1, 1), b"a" * 60), Snapshot((2, 2, 2), b"b" * 60),
                       Snapshot((3, 3, 3), b"c" * 60)]) == 2  # the newest two
    first, _ = saved.best([2, 2, 2])
    os.utime(first, (1, 1))  # (2, 2, 2) last used long ago
    os.utime(first.with_suffix(".kvconv"), (1, 1))
    saved.save([Snapshot((4, 4, 4), b"d" * 60)])  # 3 x (60 + 12) bytes > 200: the oldest goes
    assert sorted(tokens for _, tokens in saved.token_lists()) == [(3, 3, 3), (4, 4, 4)]


def test_a_saved_file_that_does_not_match_its_name_is_deleted(tmp_path: Path) -> None:
    saved = folder_of(tmp_path)
    saved.save([Snapshot((1, 2, 3, 4), b"state")])
    path, _ = saved.best([1, 2, 3, 4])
    path.write_bytes(b"\x07\x00\x00\x00" * 4)  # other tokens than the file was named for
    assert saved.load(path) is None
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_costs_the_copies_never_an_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    saved = SnapshotFolder(tmp_path / "a-file" / "states", "conv-test", 10_000, min_tokens=1)
    assert saved.save([Snapshot((1, 2), b"state")]) == 0
    assert saved.best([1, 2]) == (None, 0)


@pytest.mark.llama
async def test_a_long_chat_reopened_in_a_later_run_comes_back_from_disk(bundled_model: Path, tmp_path: Path) -> None:
    from test_llama_backend import reply

    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    settings = LlamaSettings(n_ctx=2048, n_threads=2, prompt_cache_dir=tmp_path)
    long_chat = [ChatMessage("system", CHAT_A[0].content * 6), CHAT_A[1]]

    first = LlamaCppBackend(bundled_model, settings)
    await first.load()
    text, opening = await reply(first, long_chat)
    assert opening.prompt_tokens >= 256
    follow_up = [*long_chat, ChatMessage("assistant", text), ChatMessage("user", "Can I add basil?")]
    never_left, _ = await reply(first, follow_up)  # the reference: this run goes on with the chat
    first.llama.reset()
    first.llama._ctx.kv_cache_clear()
    first.kept.clear()
    assert (await reply(first, long_chat))[0] == text
    await first.close()  # writes the chat
    assert len(list(tmp_path.glob("*.kvconv"))) == 1

    later = LlamaCppBackend(bundled_model, settings)
    await later.load()
    came_back, stats = await reply(later, follow_up)
    assert later.last_restored_from == "disk"
    assert stats.cached_tokens >= opening.prompt_tokens + opening.completion_tokens - 2
    assert came_back == never_left
    await later.close()
