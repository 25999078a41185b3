"""Events crossing from the generating thread to the event loop (backends/threaded.py)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from smoltui.backends.base import (
    CancelToken,
    Finished,
    GenerationStats,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from smoltui.backends.threaded import Emit, stream_from_thread
from smoltui.errors import BackendError

STATS = GenerationStats(prompt_tokens=1, completion_tokens=1, cached_tokens=0, ttft_s=0.0, prefill_tok_s=0.0,
                        decode_tok_s=0.0, context_used=2, context_size=8, total_s=0.0)
CALL = ToolCallDelta("call_1", "f", "{}", raw='<tool_call>{"name": "f", "arguments": {}}</tool_call>')


@pytest.fixture
def executor():  # noqa: ANN201
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


async def test_a_slow_consumer_gets_fewer_larger_deltas_with_the_same_text(executor: ThreadPoolExecutor) -> None:
    first_taken = threading.Event()
    all_emitted = threading.Event()
    words = [f"w{i} " for i in range(200)]

    def generate(emit: Emit) -> None:
        emit(TextDelta("Hello "))
        first_taken.wait(10)
        for word in words[:100]:
            emit(TextDelta(word))
        emit(ThinkingDelta("hm"))
        emit(ThinkingDelta("m"))
        emit(CALL)
        for word in words[100:]:
            emit(TextDelta(word))
        all_emitted.set()
        emit(Finished(STATS))

    events = []
    async for event in stream_from_thread(executor, generate, CancelToken()):
        events.append(event)
        if len(events) == 1:
            # Busy elsewhere (a repaint, say) while the model runs on.
            first_taken.set()
            await asyncio.get_running_loop().run_in_executor(None, all_emitted.wait, 10)
    assert events == [
        TextDelta("Hello "),
        TextDelta("".join(words[:100])),
        ThinkingDelta("hmm"),
        CALL,
        TextDelta("".join(words[100:])),
        Finished(STATS),
    ]


async def test_a_failure_in_the_thread_surfaces_after_the_deltas_before_it(executor: ThreadPoolExecutor) -> None:
    def generate(emit: Emit) -> None:
        emit(TextDelta("a"))
        emit(TextDelta("b"))
        raise ValueError("boom")

    received = []
    with pytest.raises(BackendError, match="generation failed: ValueError: boom"):
        async for event in stream_from_thread(executor, generate, CancelToken()):
            received.append(event)
    assert "".join(e.text for e in received) == "ab"


async def test_stopping_early_cancels_the_thread(executor: ThreadPoolExecutor) -> None:
    cancel = CancelToken()
    stopped = threading.Event()

    def generate(emit: Emit) -> None:
        while not cancel.cancelled:
            emit(TextDelta("x"))
        stopped.set()

    stream = stream_from_thread(executor, generate, cancel)
    async for _ in stream:
        break
    await stream.aclose()
    assert stopped.is_set()


async def test_a_consumer_that_keeps_up_gets_every_delta_as_emitted(executor: ThreadPoolExecutor) -> None:
    """Many deltas reach the loop per wake-up, but one that waited for them gets each as it was: what it
    sees does not depend on how fast the loop woke up (replies compare equal delta for delta)."""
    emitted = [TextDelta(f"t{i}") if i % 7 else ThinkingDelta(f"k{i}") for i in range(300)]

    def generate(emit: Emit) -> None:
        for delta in emitted:
            emit(delta)

    assert [event async for event in stream_from_thread(executor, generate, CancelToken())] == emitted
