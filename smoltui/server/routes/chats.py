"""``/api/chats``: chat sessions and their messages. Posting a message starts the reply on the
server (through the core's ChatService, tools and approvals included) and, by default, streams it
back as server-sent events; the reply goes on if the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from smoltui.errors import StoreError
from smoltui.orchestrator.chat import split_think_flag
from smoltui.server.errors import ApiError, conflict, not_found, unprocessable
from smoltui.server.events import EventFilter, follow
from smoltui.server.routes import core_of, server_state
from smoltui.server.state import ReplyJob
from smoltui.server.wire import jsonable

router = APIRouter(prefix="/api/chats", tags=["chats"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class NewChat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("New chat", min_length=1, max_length=500)
    tools: list[str] = Field(default_factory=list, description="tools the model may call in this chat")


class ChatChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, min_length=1, max_length=500)
    tools: list[str] | None = None


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="the user's message (a trailing /think or /no_think sets the mode)")
    think: bool | None = Field(None, description="let the model reason first (default: the config's)")
    stream: bool | None = Field(None, description="stream the reply as server-sent events "
                                                  "(default: when the request accepts text/event-stream)")
    wait: bool = Field(True, description="without streaming: wait for the reply (false: 202 at once)")


async def _session(request: Request, session_id: int) -> dict[str, Any]:
    core = core_of(request)
    try:
        session = await core.store.get_session(session_id)
        tools = await core.store.session_tools(session_id)
    except StoreError:
        raise not_found(f"no chat session {session_id}") from None
    return {**jsonable(session), "tools": tools, "replying": server_state(request).replies.busy(session_id)}


@router.get("", summary="Chat sessions, most recent first")
async def list_chats(request: Request) -> list[dict[str, Any]]:
    return [jsonable(s) for s in await core_of(request).store.list_sessions()]


@router.post("", status_code=201, summary="Start a chat session")
async def create_chat(request: Request, body: NewChat) -> dict[str, Any]:
    core = core_of(request)
    _check_tools(request, body.tools)
    session = await core.store.create_session(body.title, core.model.label)
    if body.tools:
        await core.chat.set_session_tools(session.id, body.tools)
    return await _session(request, session.id)


@router.get("/search", summary="Sessions and messages containing every word of q")
async def search(request: Request, q: str = Query(min_length=1), limit: int = Query(50, ge=1, le=500)) -> list[dict[str, Any]]:
    return [jsonable(hit) for hit in await core_of(request).store.search(q, limit)]


@router.get("/{session_id}", summary="One session")
async def get_chat(request: Request, session_id: int) -> dict[str, Any]:
    return await _session(request, session_id)


@router.patch("/{session_id}", summary="Rename a session or choose its tools")
async def change_chat(request: Request, session_id: int, body: ChatChange) -> dict[str, Any]:
    core = core_of(request)
    await _session(request, session_id)
    if body.tools is not None:
        _check_tools(request, body.tools)
    if body.title is not None:
        await core.store.rename_session(session_id, body.title)
    if body.tools is not None:
        await core.chat.set_session_tools(session_id, body.tools)
    return await _session(request, session_id)


@router.delete("/{session_id}", status_code=204, summary="Delete a session and its messages")
async def delete_chat(request: Request, session_id: int) -> Response:
    await _session(request, session_id)
    if server_state(request).replies.busy(session_id):
        raise conflict(f"chat session {session_id} is replying; cancel the reply first")
    await core_of(request).store.delete_session(session_id)
    return Response(status_code=204)


@router.get("/{session_id}/messages", summary="A session's messages, with the tool calls of each reply")
async def messages(request: Request, session_id: int, after: int = Query(0, ge=0)) -> list[dict[str, Any]]:
    await _session(request, session_id)
    return await _messages(request, session_id, after)


async def _messages(request: Request, session_id: int, after: int = 0) -> list[dict[str, Any]]:
    store = core_of(request).store
    calls: dict[int, list[dict[str, Any]]] = {}
    for call in await store.message_tool_calls(session_id):
        calls.setdefault(call.message_id, []).append(jsonable(call))
    return [{**jsonable(m), "tool_calls": calls.get(m.id, [])}
            for m in await store.messages(session_id) if m.id > after]


@router.post("/{session_id}/messages", summary="Send a message; the reply streams back (or is waited for)",
             responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}, 202: {}})
async def send_message(request: Request, session_id: int, body: NewMessage) -> Response:
    core = core_of(request)
    state = server_state(request)
    await _session(request, session_id)
    text, _ = split_think_flag(body.text)
    if not text.strip():
        raise unprocessable("text: nothing to send (the message is empty)")
    if not core.model.available or core.model.load_error:
        raise ApiError(503, f"no model to reply with: {core.model.load_error or 'none is configured'}",
                       "model_unavailable")
    job = state.replies.start(session_id, body.text, body.think)
    stream = body.stream if body.stream is not None else "text/event-stream" in request.headers.get("accept", "")
    if stream:
        return StreamingResponse(_stream(request, job), media_type="text/event-stream", headers=SSE_HEADERS)
    if not body.wait:
        return JSONResponse({"session_id": session_id, "accepted": True}, status_code=202)
    assert job.task is not None
    # wait(), not await: a client that gives up (this handler cancelled) does not cancel the reply.
    await asyncio.wait({job.task})
    return JSONResponse(await _outcome(request, job))


async def _stream(request: Request, job: ReplyJob) -> AsyncIterator[str]:
    import json

    state = server_state(request)
    task = job.task
    assert task is not None
    yield ": waiting for the model\n\n"  # the headers go out now, even while an earlier reply runs
    await job.started.wait()
    async for chunk in follow(state.ring, job.cursor, EventFilter(session_id=job.session_id), until=task.done):
        yield chunk
    if task.done():
        outcome = await _outcome(request, job)
        yield f"event: done\ndata: {json.dumps(outcome, ensure_ascii=False, default=str)}\n\n"


async def _outcome(request: Request, job: ReplyJob) -> dict[str, Any]:
    """What the reply came to: the messages it added, the reply, or why it failed."""
    task = job.task
    assert task is not None
    error: str | None = None
    if task.cancelled():
        error = "the reply was cancelled"
    elif task.exception() is not None:
        error = str(task.exception())
    elif task.result() is None:
        error = _failure(request, job) or "the reply failed"
    # A reply cancelled before its turn came added nothing (its cursor was never taken).
    added = await _messages(request, job.session_id, job.before) if job.started.is_set() and job.cursor else []
    replies = [m for m in added if m["role"] == "assistant"]
    return {"session_id": job.session_id, "ok": error is None, "error": error, "messages": added,
            "reply": replies[-1] if replies else None}


def _failure(request: Request, job: ReplyJob) -> str | None:
    import json

    items, _ = server_state(request).ring.after(job.cursor)
    for item in reversed(items):
        if item.kind == "reply_failed" and item.session_id == job.session_id:
            return json.loads(item.text).get("message")
    return None


@router.post("/{session_id}/cancel", summary="Stop the session's reply (what was written is kept)")
async def cancel(request: Request, session_id: int) -> dict[str, Any]:
    await _session(request, session_id)
    return {"session_id": session_id, "cancelled": server_state(request).replies.cancel(session_id)}


def _check_tools(request: Request, names: list[str]) -> None:
    core = core_of(request)
    unknown = [name for name in names if name not in core.tools]
    if unknown:
        raise unprocessable(f"tools: no tool named {', '.join(map(repr, unknown))}")
