"""Streaming from a worker thread: the generating code emits events; the event loop yields them.

Both local runtimes (llama.cpp and transformers) keep their model on one dedicated thread: every
call into it runs there, so a reply never races a token count or a load. :func:`stream_from_thread`
runs one generation on that thread and hands its events to the async consumer as they come.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any

from smoltui.backends.base import CancelToken, StreamEvent
from smoltui.errors import BackendError, ModelError

_DONE = object()

Emit = Callable[[object], None]


async def stream_from_thread(
    executor: Executor, generate: Callable[[Emit], None], cancel: CancelToken
) -> AsyncIterator[StreamEvent]:
    """Run ``generate(emit)`` on ``executor``; yield what it emits. A failure in the thread is raised
    here (one line: BackendError unless it already is a smoltui error); stopping early cancels it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def emit(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            generate(emit)
        except BaseException as error:  # surfaced on the loop side
            emit(error)
        finally:
            emit(_DONE)

    future = loop.run_in_executor(executor, run)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                if isinstance(item, (BackendError, ModelError)):
                    raise item
                raise BackendError(f"generation failed: {type(item).__name__}: {item}") from item
            yield item
    finally:
        # The consumer stopped early (or raised): stop the thread before anyone reuses the model.
        cancel.cancel()
        await future
