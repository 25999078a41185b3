"""The HTTP API over one core: ``create_app(core, token=...)`` is a FastAPI app that
:mod:`smoltui.server.lifecycle` serves with uvicorn (and a test can serve the same way).

Every error is JSON of one shape, ``{"error": {"type": ..., "message": ...}}``, with the status
that says what went wrong: 400 a malformed body, 401 no or a wrong token, 404 an unknown id, 409 a
conflict (an approval already answered, a run not running), 413 a body over the cap, 422 a body
that parses but is not what the route takes, 503 no model. A refused request changes nothing.

The app's lifespan subscribes the event ring to the core's bus (and unsubscribes it); the core
itself is opened and closed by whoever made it (:mod:`.lifecycle`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from smoltui import __version__
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.workflow_spec import WorkflowError
from smoltui.server.errors import ApiError
from smoltui.server.events import RING_SIZE, EventRing
from smoltui.server.guards import MAX_BODY_BYTES, BearerAuth, BodyLimit
from smoltui.server.state import ServerState

if TYPE_CHECKING:
    from smoltui.core import Core

log = logging.getLogger("smoltui.server")

DESCRIPTION = """\
One smoltui core (the model, the store, workflow runs, the approval gate) for every client.

Over the Unix socket no token is needed (the socket is private to its owner); over TCP every
request carries `Authorization: Bearer TOKEN` (`smoltui serve token` shows it). Errors are
`{"error": {"type": ..., "message": ...}}`. Live events: `GET /api/events` (server-sent events,
resumable with `Last-Event-ID`). OpenAI-compatible: `/v1/models`, `/v1/chat/completions`.
"""


def create_app(core: Core, *, token: str | None, socket_path: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, cors_origins: Sequence[str] = (),
               ring_size: int = RING_SIZE) -> FastAPI:
    """The API over ``core``.

    Args:
        token: what TCP clients must send as a bearer token (None: TCP requests are all refused).
        socket_path: the Unix socket this app is served on; requests that came over it need no token.
        max_body_bytes: larger request bodies are refused (413).
        cors_origins: browser origins allowed to call the API; none (the default) sends no CORS
            headers at all, so a web page elsewhere cannot read any answer.
        ring_size: how many events a reconnecting client can catch up on.
    """
    ring = EventRing(ring_size)
    state = ServerState(core, ring)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        unsubscribe = core.bus.subscribe(state.on_event)
        try:
            yield
        finally:
            unsubscribe()
            ring.close()
            await state.close()

    app = FastAPI(title="smoltui", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  openapi_tags=_TAGS)
    app.state.smoltui = state
    app.state.socket_path = socket_path
    _add_error_handlers(app)
    from smoltui.server import openai_compat
    from smoltui.server.routes import approvals, audit, chats, events, health, models, runs, tools, workflows
    from smoltui.server.routes import plan as planning

    for module in (health, chats, workflows, planning, runs, approvals, tools, models, audit, events):
        app.include_router(module.router)
    app.include_router(openai_compat.router)
    # Added last = outermost: the token is checked before the body is even read.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # type: ignore[arg-type]
    app.add_middleware(BearerAuth, token=token, socket_path=socket_path)  # type: ignore[arg-type]
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],  # type: ignore[arg-type]
                           allow_headers=["*"])
    return app


_TAGS = [
    {"name": "health", "description": "Is the server up, and its model."},
    {"name": "chats", "description": "Chat sessions and their messages; posting one streams the reply."},
    {"name": "workflows", "description": "The workflow files the server knows, and validation."},
    {"name": "runs", "description": "Workflow runs: start, cancel, resume; tasks, logs, outputs, files."},
    {"name": "approvals", "description": "Tool calls waiting for a person: approve or deny them."},
    {"name": "tools", "description": "The tools and their approval mode; one call through the gate."},
    {"name": "models", "description": "The loaded model and the models on disk."},
    {"name": "audit", "description": "Every recorded tool call and its decision."},
    {"name": "events", "description": "The live bus as server-sent events."},
    {"name": "openai", "description": "OpenAI-compatible endpoints answered by the loaded model."},
]


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message}}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(error.type, str(error)), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        message = str(error.detail)
        if error.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(kinds.get(error.status_code, "http_error"), message),
                            status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = list(error.errors())
        broken = [p for p in problems if p.get("type") == "json_invalid"]
        if broken:
            detail = (broken[0].get("ctx") or {}).get("error") or broken[0].get("msg", "")
            return JSONResponse(error_body("malformed_json", f"the request body is not valid JSON: {detail}"),
                                status_code=400)
        return JSONResponse(error_body("invalid", "; ".join(_problem(p) for p in problems[:10])), status_code=422)

    @app.exception_handler(WorkflowError)
    async def workflow_error(request: Request, error: WorkflowError) -> JSONResponse:
        body = error_body("invalid_workflow", str(error))
        body["error"]["problems"] = [p.as_dict() for p in error.problems]
        return JSONResponse(body, status_code=422)

    @app.exception_handler(SmoltuiError)
    async def smoltui_error(request: Request, error: SmoltuiError) -> JSONResponse:
        return JSONResponse(error_body(_snake(type(error).__name__), str(error)), status_code=400)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(error_body("internal", f"the server failed: {type(error).__name__}: {error} "
                                                   "(details in the server's log file)"), status_code=500)


def _problem(problem: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
    return f"{where}: {problem.get('msg', 'invalid')}"


def _snake(name: str) -> str:
    out = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    return out.removesuffix("_error") or "error"


__all__ = ["create_app", "error_body"]
