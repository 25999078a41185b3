"""The core's bus as server-sent events that a client can resume without missing one.

Every event published on the bus gets the next id and goes into a bounded ring (memory stays the
same however long the server runs, however many clients follow it). A client that reconnects with
``Last-Event-ID`` gets everything after that id; if it was away so long that those events left the
ring (or it saw a server that has since restarted) it gets a ``gap`` event first, telling it to
fetch the state again instead of trusting its copy.

Ids are integers that only grow, across restarts too: a server's first id is the time it started in
microseconds, so an id from an earlier server is always older than anything in the ring.

Each stream is a cursor on the one ring, never a queue per client: a slow client cannot make the
server hold more, it only falls behind until its cursor leaves the ring (then: ``gap``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from smoltui.server.wire import event_data

RING_SIZE = 10_000
KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class RingEvent:
    id: int
    kind: str
    text: str
    """The event's JSON, encoded once for every client."""
    session_id: int | None
    run_ids: tuple[str, ...]


class EventRing:
    """The last ``size`` events of the bus, each with its id; subscribe :meth:`publish` to the bus."""

    def __init__(self, size: int = RING_SIZE, *, first_id: int | None = None) -> None:
        if size < 1:
            raise ValueError("the ring needs room for at least one event")
        self._items: deque[RingEvent] = deque(maxlen=size)
        self._next = first_id if first_id is not None else time.time_ns() // 1000
        self._changed = asyncio.Event()
        self.closed = False

    @property
    def last_id(self) -> int:
        """The id of the newest event (one less than the first id while there is none)."""
        return self._next - 1

    @property
    def oldest_id(self) -> int:
        """The id of the oldest event still held (the next id while there is none)."""
        return self._items[0].id if self._items else self._next

    def publish(self, event: Any) -> None:
        """A bus subscriber: number the event and keep it; wake every stream."""
        data = event_data(event)
        item = RingEvent(self._next, event.kind, json.dumps(data, ensure_ascii=False, separators=(",", ":")),
                         _session_of(event), _runs_of(event))
        self._next += 1
        self._items.append(item)
        self.wake()

    def after(self, last_id: int) -> tuple[list[RingEvent], bool]:
        """The events after ``last_id``, and whether some of them are no longer held (a gap)."""
        if last_id > self.last_id:  # an id this server never gave: from a server that is gone
            return list(self._items), True
        gap = last_id < self.oldest_id - 1
        start = 0 if gap else last_id - self.oldest_id + 1
        return list(itertools.islice(self._items, start, None)), gap

    async def wait(self, last_id: int, timeout: float) -> bool:
        """Until an event newer than ``last_id`` is held (True), the ring closes or ``timeout`` passes."""
        changed = self._changed
        if self.last_id > last_id or self.closed:
            return self.last_id > last_id
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return self.last_id > last_id

    def close(self) -> None:
        """End every stream (the server is stopping: open streams must not hold it up)."""
        self.closed = True
        self.wake()

    def wake(self) -> None:
        """Wake every stream to look again (a stream's ``until`` may have become true)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _session_of(event: Any) -> int | None:
    session = getattr(event, "session_id", None)
    if session is None:
        call = getattr(event, "call", None)
        session = getattr(call, "session_id", None)
    return session


def _runs_of(event: Any) -> tuple[str, ...]:
    run = getattr(event, "run_id", None)
    if run is None:
        run = getattr(getattr(event, "call", None), "run_id", None)
    if run is not None:
        return (run,)
    return tuple(getattr(event, "run_ids", ()))


@dataclass(frozen=True)
class EventFilter:
    """Which events one stream wants (None: any)."""

    kinds: Collection[str] | None = None
    session_id: int | None = None
    run_id: str | None = None

    def __call__(self, item: RingEvent) -> bool:
        if self.kinds is not None and item.kind not in self.kinds:
            return False
        if self.session_id is not None and item.session_id != self.session_id:
            return False
        return self.run_id is None or self.run_id in item.run_ids


def sse(item: RingEvent) -> str:
    return f"id: {item.id}\nevent: {item.kind}\ndata: {item.text}\n\n"


def gap_event(last_id: int, ring: EventRing) -> str:
    data = {"kind": "gap", "last_event_id": last_id, "oldest_id": ring.oldest_id,
            "message": "events after your last id are no longer held: fetch the state again"}
    return f"event: gap\ndata: {json.dumps(data)}\n\n"


async def follow(ring: EventRing, last_id: int | None, wanted: Callable[[RingEvent], bool], *,
                 keepalive_s: float = KEEPALIVE_S, until: Callable[[], bool] | None = None) -> AsyncIterator[str]:
    """The SSE text of every wanted event after ``last_id`` (None: from now on), as it comes.

    While nothing comes, every ``keepalive_s`` an id-only event carries the stream's position: it
    keeps proxies from closing the connection, and a client whose filter skipped many events resumes
    from there. ``until`` ends the stream once it is true and every event held has been sent.
    """
    cursor = ring.last_id if last_id is None else last_id
    yield "retry: 1000\n\n"
    while True:
        items, gap = ring.after(cursor)
        if gap:
            yield gap_event(cursor, ring)
        for item in items:
            cursor = item.id
            if wanted(item):
                yield sse(item)
        if ring.closed or (until is not None and until() and cursor >= ring.last_id):
            return
        if not await ring.wait(cursor, keepalive_s) and not ring.closed:
            yield f"id: {cursor}\n\n"


__all__ = ["KEEPALIVE_S", "RING_SIZE", "EventFilter", "EventRing", "RingEvent", "follow", "gap_event", "sse"]
