"""Streaming from a worker thread: the generating code emits events; the event loop yields them.

Both local runtimes (llama.cpp and transformers) keep their model on one dedicated thread: every
call into it runs there, so a reply never races a token count or a load. :func:`stream_from_thread`
runs one generation on that thread and hands its events to the async consumer as they come.

Events cross in batches: the thread appends to a buffer and wakes the event loop only when no
wake-up is pending already, and the loop takes everything there is at once, so a fast model does not
wake the loop once per token. A consumer that fell behind (busy elsewhere while the loop went round:
a screen repainting, a store write) gets what piled up meanwhile as fewer, larger deltas: consecutive
text (or thinking) deltas of that batch are merged. A consumer that was waiting gets every delta as
it was emitted, so what it sees never depends on timing.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from smoltui.backends.base import CancelToken, StreamEvent, TextDelta, ThinkingDelta
from smoltui.errors import BackendError, ModelError

_DONE = object()

Emit = Callable[[object], None]


class _Batches:
    """A buffer the generating thread appends to and the event loop drains whole."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._wake_pending = False
        self._ready = asyncio.Event()

    def put(self, item: object) -> None:
        """(Generating thread.) Append; wake the loop unless a wake-up is on its way already."""
        with self._lock:
            self._items.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self) -> tuple[list[Any], bool]:
        """(Event loop.) Everything appended since the last take, in order (waits for at least one),
        and whether it had piled up: the wake-up had already come when the consumer asked."""
        piled_up = self._ready.is_set()
        await self._ready.wait()
        with self._lock:
            items, self._items = self._items, []
            self._wake_pending = False
            self._ready.clear()
        return items, piled_up


def merged(items: list[Any]) -> Iterator[Any]:
    """``items`` with each run of text deltas (or of thinking deltas) joined into one delta."""
    for kind, run in itertools.groupby(items, key=type):
        if kind is TextDelta or kind is ThinkingDelta:
            yield kind("".join(delta.text for delta in run))
        else:
            yield from run


async def stream_from_thread(
    executor: Executor, generate: Callable[[Emit], None], cancel: CancelToken
) -> AsyncIterator[StreamEvent]:
    """Run ``generate(emit)`` on ``executor``; yield what it emits. A failure in the thread is raised
    here (one line: BackendError unless it already is a smoltui error); stopping early cancels it."""
    loop = asyncio.get_running_loop()
    batches = _Batches(loop)

    def run() -> None:
        try:
            generate(batches.put)
        except BaseException as error:  # surfaced on the loop side
            batches.put(error)
        finally:
            batches.put(_DONE)

    future = loop.run_in_executor(executor, run)
    try:
        while True:
            items, piled_up = await batches.take()
            for item in merged(items) if piled_up else items:
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, (BackendError, ModelError)):
                        raise item
                    raise BackendError(f"generation failed: {type(item).__name__}: {item}") from item
                yield item
    finally:
        # The consumer stopped early (or raised): stop the thread before anyone reuses the model.
        cancel.cancel()
        await future
