"""Bounded repaint rates for text that streams in: whatever arrives between two repaints is
delivered in one go, so a fast model never makes a screen parse and draw once per token (which
takes the CPU, and the GIL, away from the generating thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownStream

REPAINTS_PER_SECOND = 6


class Throttle:
    """Collects text; hands it to ``deliver`` at most ``rate`` times a second (the first piece at once)."""

    def __init__(self, deliver: Callable[[str], Awaitable[None] | None], *, rate: float = REPAINTS_PER_SECOND) -> None:
        self._deliver = deliver
        self._interval = 1.0 / rate
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._flushing: asyncio.Task[None] | None = None

    def add(self, text: str) -> None:
        if not text:
            return
        self._pending.append(text)
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + self._interval - loop.time())
        self._timer = loop.call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        self._flushing = asyncio.ensure_future(self.flush())

    async def flush(self) -> None:
        """Deliver what is pending now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._last = asyncio.get_running_loop().time()
        result = self._deliver(text)
        if result is not None:
            await result

    async def close(self) -> None:
        """Deliver the rest and stop."""
        if self._flushing is not None and not self._flushing.done():
            await self._flushing
        await self.flush()


class ThrottledMarkdown:
    """A Markdown widget's stream (appended, never re-rendered whole) behind a :class:`Throttle`."""

    def __init__(self, widget: Markdown, *, rate: float = REPAINTS_PER_SECOND) -> None:
        self._stream: MarkdownStream = Markdown.get_stream(widget)
        self._throttle = Throttle(self._stream.write, rate=rate)

    def write(self, text: str) -> None:
        self._throttle.add(text)

    async def stop(self) -> None:
        await self._throttle.close()
        await self._stream.stop()
