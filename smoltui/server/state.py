"""What the server keeps beside the core: the event ring, the chat replies it started, and which
approvals were answered (so a second answer is told "already answered", not "unknown").

A reply started over HTTP belongs to the server, not to the request: a client that goes away (a
closed terminal, a dropped SSH session) never stops it. Only ``POST /api/chats/{id}/cancel`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smoltui.server.errors import conflict

if TYPE_CHECKING:
    from smoltui.core import Core
    from smoltui.orchestrator.events import ReplyFinished
    from smoltui.server.events import EventRing

log = logging.getLogger("smoltui.server")

ANSWERED_KEPT = 2000


@dataclass(frozen=True)
class Answered:
    decision: str
    decided_by: str


@dataclass
class ReplyJob:
    """One reply started over the API. ``cursor`` and ``before`` are taken when its turn comes (an
    earlier reply in the same session is over by then), so its stream and its outcome hold only
    its own events and messages."""

    session_id: int
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cursor: int = 0
    """The ring's last event id when the reply began."""
    before: int = 0
    """The session's last message id when the reply began."""
    task: asyncio.Task[ReplyFinished | None] | None = None


class Replies:
    """Chat replies started over the API: one at a time (the core's chat takes one reply at a
    time), queued in arrival order; each can be cancelled while it waits or while it streams."""

    def __init__(self, core: Core, ring: EventRing) -> None:
        self.core = core
        self.ring = ring
        self._lock = asyncio.Lock()
        self.active: int | None = None
        """The session whose reply is being generated now."""
        self._jobs: dict[int, list[ReplyJob]] = {}

    def start(self, session_id: int, text: str, think: bool | None) -> ReplyJob:
        job = ReplyJob(session_id)
        job.task = asyncio.create_task(self._reply(job, text, think), name=f"reply {session_id}")
        self._jobs.setdefault(session_id, []).append(job)
        job.task.add_done_callback(lambda _: self._forget(job))
        job.task.add_done_callback(lambda _: self.ring.wake())  # a stream following it looks again
        return job

    async def _reply(self, job: ReplyJob, text: str, think: bool | None) -> ReplyFinished | None:
        async with self._lock:
            self.active = job.session_id
            job.cursor = self.ring.last_id
            job.before = max((m.id for m in await self.core.store.messages(job.session_id)), default=0)
            job.started.set()
            try:
                await self.core.model.load()  # the chat waits for a load someone started; start it
                return await self.core.chat.send(job.session_id, text, think=think)
            finally:
                self.active = None

    def _forget(self, job: ReplyJob) -> None:
        job.started.set()  # a job cancelled while queued never began: nobody waits for it
        jobs = self._jobs.get(job.session_id, [])
        if job in jobs:
            jobs.remove(job)
        if not jobs:
            self._jobs.pop(job.session_id, None)
        task = job.task
        if task is not None and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.info("reply in session %s ended with %s: %s", job.session_id, type(error).__name__, error)

    def busy(self, session_id: int) -> bool:
        return bool(self._jobs.get(session_id))

    def cancel(self, session_id: int) -> bool:
        """Stop the session's reply (keeping what was generated) and drop its queued ones."""
        jobs = list(self._jobs.get(session_id, ()))
        if not jobs:
            return False
        # The reply being generated stops at its next token and keeps its text; one still loading
        # the model (no token yet) or waiting its turn is cancelled outright.
        if self.active == session_id and self.core.chat.cancel():
            jobs = jobs[1:]
        for job in jobs:
            if job.task is not None:
                job.task.cancel()
        return True

    async def close(self) -> None:
        tasks = [job.task for jobs in self._jobs.values() for job in jobs if job.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class ServerState:
    def __init__(self, core: Core, ring: EventRing) -> None:
        self.core = core
        self.ring = ring
        self.replies = Replies(core, ring)
        self.started_at = time.time()
        self._answered: OrderedDict[str, Answered] = OrderedDict()

    def on_event(self, event: Any) -> None:
        """The bus subscriber: into the ring; a finished call is remembered as answered."""
        self.ring.publish(event)
        if event.kind == "tool_call_finished":
            self._remember(event.call.id, Answered(event.decision, event.decided_by))

    def _remember(self, call_id: str, answer: Answered) -> None:
        self._answered[call_id] = answer
        self._answered.move_to_end(call_id)
        while len(self._answered) > ANSWERED_KEPT:
            self._answered.popitem(last=False)

    def answered(self, call_id: str) -> Answered | None:
        return self._answered.get(call_id)

    def answer(self, call_id: str, decision: Any) -> None:
        """Settle a waiting call through the gate; 409 if it was answered already, 404 if unknown."""
        if not self.core.gate.answer(call_id, decision):
            self.refuse_settled(call_id)
        self._remember(call_id, Answered(decision.kind, "user"))  # as the gate records it

    def refuse_settled(self, call_id: str) -> None:
        from smoltui.server.errors import not_found

        earlier = self.answered(call_id)
        if earlier is not None:
            raise conflict(f"the call {call_id} was already answered ({earlier.decision}, decided by {earlier.decided_by})")
        raise not_found(f"no call {call_id} is waiting for approval")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.replies.close()


__all__ = ["Answered", "Replies", "ServerState"]
