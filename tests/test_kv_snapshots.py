"""Conversations kept in RAM while the one llama.cpp context serves another chat, a plan or a task."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoltui.backends.base import ChatMessage, GenerationParams
from smoltui.backends.kv_snapshots import KVSnapshots, Snapshot

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
