"""``GET /api/events``: the core's bus as server-sent events (see :mod:`smoltui.server.events`).

Resume with the ``Last-Event-ID`` header (a browser's EventSource sends it by itself) or the
``last_event_id`` query parameter; without either, the stream starts with the next event.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from smoltui.server.errors import bad_request
from smoltui.server.events import EventFilter, follow
from smoltui.server.routes import server_state

router = APIRouter(prefix="/api", tags=["events"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/events", summary="Live events (server-sent events, resumable)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def events(request: Request,
                 kinds: str | None = Query(None, description="comma-separated event kinds (default: all)"),
                 session_id: int | None = Query(None, description="only this chat session's events"),
                 run_id: str | None = Query(None, description="only this run's events"),
                 last_event_id: int | None = Query(None, description="resume after this id (or the header)"),
                 ) -> StreamingResponse:
    header = request.headers.get("last-event-id")
    if header is not None and last_event_id is None:
        try:
            last_event_id = int(header.strip())
        except ValueError:
            raise bad_request(f"Last-Event-ID must be an event id (a number), not {header[:40]!r}") from None
    wanted = EventFilter(
        kinds=frozenset(k.strip() for k in kinds.split(",") if k.strip()) if kinds else None,
        session_id=session_id,
        run_id=run_id,
    )
    ring = server_state(request).ring
    # The position is taken now, not when the stream's first chunk is written: whatever happens
    # after this request arrived is in it.
    stream = follow(ring, ring.last_id if last_event_id is None else last_event_id, wanted)
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)
