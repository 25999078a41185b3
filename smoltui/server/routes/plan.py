"""``/api/plan``: the model drafts a workflow for a goal (the core's planner, offered the server's
tools), streamed as server-sent events: ``text`` (the reply as it is written), ``repair`` (the first
draft had problems; the model is asked once more), then ``done`` with the draft, or ``error``.

A draft belongs to the request that asked for it: nothing is saved, and a client that goes away
stops it (the model is free for the next turn).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from smoltui.server.errors import ApiError
from smoltui.server.routes import core_of

router = APIRouter(prefix="/api/plan", tags=["workflows"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class PlanBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    goal: str = Field(min_length=1, max_length=20_000, description="what the workflow should do")
    max_tokens: int | None = Field(None, ge=64, le=32_768, description="longest reply the model may write")
    stream: bool = Field(True, description="stream progress as server-sent events (false: wait for the draft)")


def draft_json(draft: Any) -> dict[str, Any]:
    return {"goal": draft.goal, "yaml": draft.yaml, "problems": [p.as_dict() for p in draft.problems],
            "valid": draft.valid, "attempts": draft.attempts, "reply": draft.reply, "cancelled": draft.cancelled,
            "stem": draft.stem if draft.yaml else None}


@router.post("", summary="Draft a workflow for a goal (streamed; nothing is saved)",
             responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}})
async def plan(request: Request, body: PlanBody) -> Response:
    core = core_of(request)
    goal = " ".join(body.goal.split())
    if not goal:
        raise ApiError(422, "goal: nothing to plan (the goal is empty)", "invalid")
    if not core.model.available or core.model.load_error:
        raise ApiError(503, f"no model to plan with: {core.model.load_error or 'none is configured'}",
                       "model_unavailable")
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def work() -> Any:
        await core.model.load()
        async with core.model.turn("the planner") as backend:
            planner = core.planner(backend, max_tokens=body.max_tokens)
            queue.put_nowait(("started", {"model": core.model.label}))
            return await planner.draft(
                goal, on_text=lambda text: queue.put_nowait(("text", {"text": text})),
                on_repair=lambda problems: queue.put_nowait(("repair", {"problems": [p.as_dict() for p in problems]})))

    if not body.stream:
        return JSONResponse(draft_json(await work()))
    job = asyncio.create_task(work(), name="plan")
    job.add_done_callback(lambda _: queue.put_nowait(("end", {})))
    return StreamingResponse(_events(job, queue), media_type="text/event-stream", headers=SSE_HEADERS)


async def _events(job: asyncio.Task[Any], queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> AsyncIterator[str]:
    try:
        while True:
            kind, data = await queue.get()
            if kind == "end":
                break
            yield _sse(kind, data)
        error = job.exception() if not job.cancelled() else None
        if job.cancelled():
            yield _sse("error", {"type": "cancelled", "message": "the draft was cancelled"})
        elif error is not None:
            yield _sse("error", {"type": type(error).__name__, "message": str(error)})
        else:
            yield _sse("done", draft_json(job.result()))
    finally:
        job.cancel()  # the client went away: the model is free again


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


__all__ = ["draft_json", "router"]
