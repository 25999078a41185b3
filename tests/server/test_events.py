"""The live bus as server-sent events: a client that drops and reconnects with ``Last-Event-ID``
gets exactly what it missed, in order; one that was away too long (or saw another server) is told
to fetch the state again; memory stays bounded by the ring."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import httpx

from server.conftest import REPLY
from server.harness import RunningServer, error_of, events
from smoltui.server.events import EventFilter, EventRing, follow


def _say(api: httpx.Client, session: int, text: str) -> None:
    response = api.post(f"/api/chats/{session}/messages", json={"text": text, "stream": False})
    assert response.status_code == 200 and response.json()["ok"], response.text


def _finished(session: int, user_text_count: int):  # noqa: ANN202
    seen = {"replies": 0}

    def done(event) -> bool:  # noqa: ANN001
        if event.kind == "reply_finished" and event.data["session_id"] == session:
            seen["replies"] += 1
        return seen["replies"] == user_text_count

    return done


def test_a_client_that_reconnects_with_last_event_id_misses_nothing(server: RunningServer) -> None:
    with server.unix() as api:
        session = api.post("/api/chats", json={"title": "resume"}).json()["id"]
        with events(api) as whole:  # connected the whole time: what the other must end up with
            with events(api) as first:
                _say(api, session, "one")
                first.until(_finished(session, 1), "the first reply")
            # Disconnected now; the second reply happens while nobody is listening on this stream.
            _say(api, session, "two")
            with events(api, last_event_id=first.last_id) as second:
                second.until(_finished(session, 1), "the second reply")
            whole.until(_finished(session, 2), "both replies")
    resumed = first.seen + second.seen
    assert [(e.id, e.kind, e.data) for e in resumed] == [(e.id, e.kind, e.data) for e in whole.seen]
    ids = [e.id for e in resumed]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # every id, once, in order
    text = "".join(e.data["text"] for e in second.seen if e.kind == "token")
    assert text == REPLY


def test_an_id_from_before_the_ring_gets_a_gap_event_first(server: RunningServer) -> None:
    with server.unix() as api:
        session = api.post("/api/chats", json={"title": "gap"}).json()["id"]
        _say(api, session, "something to hold")
        with events(api, last_event_id=1) as stream:
            gap = stream.next()
            after = stream.next()
        with events(api, last_event_id=10**18) as future:  # an id this server never gave
            from_elsewhere = future.next()
        bad = api.get("/api/events", headers={"Last-Event-ID": "yesterday"})
    assert gap.kind == "gap" and gap.id is None and "fetch the state again" in gap.data["message"]
    assert after.id == gap.data["oldest_id"]  # then everything still held, from the oldest on
    assert from_elsewhere.kind == "gap"
    assert bad.status_code == 400 and "Last-Event-ID" in error_of(bad)["message"]


def test_a_stream_can_be_narrowed_to_one_chat_and_some_kinds(server: RunningServer) -> None:
    with server.unix() as api:
        mine = api.post("/api/chats", json={"title": "mine"}).json()["id"]
        other = api.post("/api/chats", json={"title": "other"}).json()["id"]
        with events(api, session_id=mine, kinds="reply_started,reply_finished") as stream:
            _say(api, other, "not for this stream")
            _say(api, mine, "for this stream")
            finished = stream.until(lambda e: e.kind == "reply_finished", "my reply")
    assert [e.kind for e in stream.seen] == ["reply_started", "reply_finished"]
    assert {e.data["session_id"] for e in stream.seen} == {mine}
    assert finished.data["content"] == REPLY


@dataclass(frozen=True)
class _Ping:
    n: int
    session_id: int = 1
    kind: str = "token"


async def test_a_stream_that_fell_out_of_the_ring_is_told_and_the_ring_stays_bounded() -> None:
    ring = EventRing(4, first_id=100)
    for n in range(10):
        ring.publish(_Ping(n))
    assert ring.oldest_id == 106 and ring.last_id == 109
    held, gap = ring.after(101)  # a client last saw 101; 102..105 are gone
    assert gap and [item.id for item in held] == [106, 107, 108, 109]
    held, gap = ring.after(107)
    assert not gap and [item.id for item in held] == [108, 109]

    chunks: list[str] = []
    stream = follow(ring, 101, EventFilter())
    async for chunk in stream:
        chunks.append(chunk)
        if chunk.startswith("id: 109"):
            break
    await stream.aclose()
    assert chunks[0] == "retry: 1000\n\n" and chunks[1].startswith("event: gap")
    assert [json.loads(c.split("data: ", 1)[1])["n"] for c in chunks[2:]] == [6, 7, 8, 9]


async def test_a_waiting_stream_wakes_for_the_next_event_and_ends_when_the_ring_closes() -> None:
    ring = EventRing(8, first_id=1)
    stream = follow(ring, None, EventFilter(), keepalive_s=60)
    assert await anext(stream) == "retry: 1000\n\n"
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # let it reach its wait
    assert not waiting.done()
    ring.publish(_Ping(1))
    assert (await waiting).startswith("id: 1\nevent: token\n")
    closing = asyncio.ensure_future(anext(stream, None))
    await asyncio.sleep(0)
    ring.close()
    assert await closing is None  # the stream ends: a stopping server is not held up by it
