"""The typed client of a running ``smoltui serve``: what the CLI, the TUI and scripts call instead
of building a core of their own when a server runs for their home.

    client = ServerClient.for_home(paths)        # None: no server runs -> build the core in-process
    async with client:
        run = await client.launch("workflows/report.yaml", variables={"n": 3})
        async for event in client.events(run_id=run["id"]):
            ...

Over the home's Unix socket (no token: the socket is private to its owner) or over TCP with the
bearer token. Every refusal is an :class:`ApiError` with the server's status, type and message;
a server that cannot be reached is a :class:`ServerUnavailable`. :meth:`ServerClient.events`
follows the live bus and reconnects by itself, with backoff, resuming after the last event it saw;
``on_state`` hears ``"reconnecting"`` and ``"connected"`` so a front end can say so.

httpx only (no FastAPI): importing this costs what a client needs.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from smoltui.errors import ConfigError, NetworkError
from smoltui.paths import Paths
from smoltui.server.errors import ApiError
from smoltui.server.locations import read_token, running_pid, socket_path

SOCKET_BASE_URL = "http://smoltui"
"""The URL requests over the Unix socket are written against (the host is not used)."""

SERVER_ENV = "SMOLTUI_SERVER"
"""Which server the front ends use instead of this home's own: ``unix:/path/to.sock`` (or a bare
path) for a socket forwarded with ``ssh -L``, or ``http://127.0.0.1:8765`` for a forwarded port."""
TOKEN_ENV = "SMOLTUI_TOKEN"
"""The bearer token for a ``SMOLTUI_SERVER`` URL (the remote's ``smoltui serve token``); without
it, this home's own token file."""

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
EVENTS_READ_TIMEOUT_S = 45.0
"""The server sends something every 15 s on an idle stream; three times that silent is a dead server."""


class ServerUnavailable(NetworkError):
    """The server cannot be reached (not running, or gone mid-request)."""


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event: ``kind`` is the bus event's kind (``token``, ``run_state``,
    ``approval_needed``, …), ``gap`` (events were missed: fetch the state again) or, at the end of
    a posted message's stream, ``done``."""

    id: int | None
    kind: str
    data: dict[str, Any]


def probe(socket: Path | str, *, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """``GET /health`` over a Unix socket, synchronously: its answer, or None when nothing answers."""
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url=SOCKET_BASE_URL,
                          timeout=timeout_s) as http:
            response = http.get("/health")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


class ServerClient:
    def __init__(self, *, socket: Path | str | None = None, base_url: str | None = None,
                 token: str | None = None, timeout_s: float = 30.0) -> None:
        """Over ``socket`` (a Unix socket path) or ``base_url`` (``http://HOST:PORT``, with ``token``)."""
        if (socket is None) == (base_url is None):
            raise ValueError("give either socket or base_url")
        self.where = f"unix:{socket}" if socket is not None else str(base_url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        transport = httpx.AsyncHTTPTransport(uds=str(socket)) if socket is not None else None
        self._http = httpx.AsyncClient(transport=transport, base_url=base_url or SOCKET_BASE_URL,
                                       headers=headers, timeout=timeout)

    @classmethod
    def for_home(cls, paths: Paths, *, timeout_s: float = 30.0) -> ServerClient | None:
        """A client of the server running for this home (over its socket), or None when none runs.

        ``SMOLTUI_SERVER`` names another server (a socket or port forwarded from a remote machine):
        then always a client of that one, never None, so a server that cannot be reached is an
        error rather than a quiet fall-back to a local core with another history."""
        named = os.environ.get(SERVER_ENV, "").strip()
        if named:
            return cls.named(named, paths, timeout_s=timeout_s)
        if running_pid(paths) is None:
            return None
        path = socket_path(paths)
        return cls(socket=path, timeout_s=timeout_s) if path.exists() else None

    @classmethod
    def named(cls, where: str, paths: Paths, *, timeout_s: float = 30.0) -> ServerClient:
        """A client of ``where`` as ``SMOLTUI_SERVER`` spells it: ``unix:PATH``, a path, or an http(s) URL."""
        if where.startswith(("http://", "https://")):
            token = os.environ.get(TOKEN_ENV, "").strip() or read_token(paths)
            return cls(base_url=where.rstrip("/"), token=token, timeout_s=timeout_s)
        path = where.removeprefix("unix:")
        if not path.startswith(("/", "~", ".")):
            raise ConfigError(f"{SERVER_ENV}={where!r} is neither unix:/path/to.sock nor an http:// URL")
        return cls(socket=Path(path).expanduser(), timeout_s=timeout_s)

    @classmethod
    def over_tcp(cls, url: str, paths: Paths, *, timeout_s: float = 30.0) -> ServerClient:
        """A client of ``url`` with the token kept in this home's config folder."""
        return cls(base_url=url, token=read_token(paths), timeout_s=timeout_s)

    async def __aenter__(self) -> ServerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing --------------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      params: Mapping[str, Any] | None = None) -> Any:
        """One request; its JSON answer (None for 204). ApiError for a refusal."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(method, path, json=json_body, params=query)
        except httpx.HTTPError as error:
            raise self._unavailable(error) from None
        if response.status_code >= 400:
            raise api_error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _unavailable(self, error: httpx.HTTPError) -> ServerUnavailable:
        return ServerUnavailable(f"cannot reach the smoltui server at {self.where}: "
                                 f"{type(error).__name__}{f': {error}' if str(error) else ''}")

    async def _stream(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None, read_timeout_s: float | None = None,
                      seen: Callable[[int], None] | None = None,
                      opened: Callable[[], None] | None = None) -> AsyncIterator[ServerEvent]:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {}
        if read_timeout_s is not None:
            extra["timeout"] = httpx.Timeout(self._http.timeout.connect, read=read_timeout_s)
        request = self._http.build_request(method, path, json=json_body, params=query,
                                           headers={"Accept": "text/event-stream", **(headers or {})}, **extra)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._unavailable(error) from None
        try:
            if response.status_code >= 400:
                await response.aread()
                raise api_error(response)
            if opened is not None:
                opened()
            async for event in parse_sse(response.aiter_lines(), seen):
                yield event
        except httpx.HTTPError as error:
            raise self._unavailable(error) from None
        finally:
            await response.aclose()

    # -- health and the model --------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/health")

    async def models(self) -> dict[str, Any]:
        return await self.request("GET", "/api/models")

    async def load_model(self) -> dict[str, Any]:
        return await self.request("POST", "/api/models/load")

    # -- chats -----------------------------------------------------------------------------------

    async def chats(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/api/chats")

    async def create_chat(self, title: str = "New chat", *, tools: Iterable[str] = ()) -> dict[str, Any]:
        return await self.request("POST", "/api/chats", json_body={"title": title, "tools": list(tools)})

    async def chat(self, session_id: int) -> dict[str, Any]:
        return await self.request("GET", f"/api/chats/{session_id}")

    async def update_chat(self, session_id: int, *, title: str | None = None,
                          tools: Iterable[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if title is not None:
            body["title"] = title
        if tools is not None:
            body["tools"] = list(tools)
        return await self.request("PATCH", f"/api/chats/{session_id}", json_body=body)

    async def delete_chat(self, session_id: int) -> None:
        await self.request("DELETE", f"/api/chats/{session_id}")

    async def messages(self, session_id: int, *, after: int = 0) -> list[dict[str, Any]]:
        return await self.request("GET", f"/api/chats/{session_id}/messages", params={"after": after})

    async def search(self, query: str, *, limit: int = 50) -> list[dict[str, Any]]:
        return await self.request("GET", "/api/chats/search", params={"q": query, "limit": limit})

    def send(self, session_id: int, text: str, *, think: bool | None = None) -> AsyncIterator[ServerEvent]:
        """Send a message and follow its reply: the session's events (``reply_started``,
        ``token``, ``thinking``, ``tool_call_requested``, ``approval_needed``, ``reply_finished``,
        …), then one ``done`` event with ``{ok, error, messages, reply}``. The reply goes on
        on the server if this stream is dropped; :meth:`events` with ``session_id`` follows it."""
        body = {"text": text, "think": think, "stream": True}
        return self._stream("POST", f"/api/chats/{session_id}/messages", json_body=body,
                            read_timeout_s=EVENTS_READ_TIMEOUT_S)

    async def send_and_wait(self, session_id: int, text: str, *, think: bool | None = None) -> dict[str, Any]:
        """Send a message and wait for the whole reply: ``{ok, error, messages, reply}``."""
        body = {"text": text, "think": think, "stream": False}
        return await self.request("POST", f"/api/chats/{session_id}/messages", json_body=body)

    async def cancel_reply(self, session_id: int) -> bool:
        return (await self.request("POST", f"/api/chats/{session_id}/cancel"))["cancelled"]

    # -- workflows and runs ----------------------------------------------------------------------

    async def workflows(self) -> dict[str, Any]:
        return await self.request("GET", "/api/workflows")

    async def validate(self, *, path: str | Path | None = None, text: str | None = None,
                       name: str = "workflow.yaml") -> dict[str, Any]:
        """``{valid, problems: [{file, line, col, message}]}`` for a file on the server or YAML text."""
        body: dict[str, Any] = {"path": str(path)} if path is not None else {"text": text, "name": name}
        return await self.request("POST", "/api/workflows/validate", json_body=body)

    async def runs(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        return await self.request("GET", "/api/runs", params={"limit": limit})

    async def run(self, run_id: str) -> dict[str, Any]:
        """The run with its ``tasks`` and the ``approvals`` it waits on."""
        return await self.request("GET", f"/api/runs/{run_id}")

    async def launch(self, workflow: str | Path, *, variables: Mapping[str, Any] | None = None,
                     assignments: Iterable[str] = (), concurrency: int | None = None,
                     workspace: str | Path | None = None, approve: str | None = None) -> dict[str, Any]:
        """Start a run of a workflow file on the server (or a workflow id of its folders); the run.
        ``assignments`` are ``--var`` style ``NAME=VALUE`` strings (values read as YAML).
        ``approve`` (``none``, ``all``, ``read``, ``TOOL,...``): the server answers the run's
        approvals as ``--approve`` would; without it they wait for a person."""
        body = {"workflow": str(workflow), "variables": dict(variables or {}), "assignments": list(assignments),
                "concurrency": concurrency, "workspace": str(workspace) if workspace is not None else None,
                "approve": approve}
        return await self.request("POST", "/api/runs", json_body=body)

    async def cancel_run(self, run_id: str) -> None:
        await self.request("POST", f"/api/runs/{run_id}/cancel")

    async def resume(self, run_id: str, *, retry: Iterable[str] | None = None,
                     variables: Mapping[str, Any] | None = None, assignments: Iterable[str] = (),
                     concurrency: int | None = None, workspace: str | Path | None = None,
                     approve: str | None = None) -> dict[str, Any]:
        body = {"retry": list(retry) if retry is not None else None, "variables": dict(variables or {}),
                "assignments": list(assignments), "concurrency": concurrency,
                "workspace": str(workspace) if workspace is not None else None, "approve": approve}
        return await self.request("POST", f"/api/runs/{run_id}/resume", json_body=body)

    async def retry_task(self, run_id: str, task_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/api/runs/{run_id}/tasks/{task_id}/retry")

    async def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/runs/{run_id}/tasks/{task_id}")

    async def task_outputs(self, run_id: str, task_id: str) -> dict[str, Any]:
        """Outputs as JSON; an artifact is ``{"$artifact": kind, "path", "download"}`` (a table
        also has ``preview: {columns, rows, shape}``)."""
        return await self.request("GET", f"/api/runs/{run_id}/tasks/{task_id}/outputs")

    async def logs(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        return await self.request("GET", f"/api/runs/{run_id}/logs", params={"after": after})

    async def download(self, run_id: str, path: str) -> bytes:
        """A file of the run's folder (only those are served)."""
        try:
            response = await self._http.get(f"/api/runs/{run_id}/files", params={"path": path})
        except httpx.HTTPError as error:
            raise self._unavailable(error) from None
        if response.status_code >= 400:
            raise api_error(response)
        return response.content

    def plan(self, goal: str, *, max_tokens: int | None = None) -> AsyncIterator[ServerEvent]:
        """Draft a workflow for ``goal``: ``started``, ``text`` deltas, ``repair`` (with the first
        draft's problems), then ``done`` (``{yaml, problems, valid, reply, ...}``) or ``error``.
        Dropping the stream stops the draft."""
        body = {"goal": goal, "max_tokens": max_tokens, "stream": True}
        return self._stream("POST", "/api/plan", json_body=body, read_timeout_s=EVENTS_READ_TIMEOUT_S * 4)

    # -- approvals -------------------------------------------------------------------------------

    async def approvals(self, *, run_id: str | None = None, session_id: int | None = None) -> list[dict[str, Any]]:
        """Calls waiting for a person, longest-waiting first: ``call_id``, ``tool``, ``arguments``,
        ``risk``, ``where``, …"""
        return await self.request("GET", "/api/approvals", params={"run_id": run_id, "session_id": session_id})

    async def approve(self, call_id: str, *, always: bool = False) -> dict[str, Any]:
        return await self.request("POST", f"/api/approvals/{call_id}/approve", json_body={"always": always})

    async def deny(self, call_id: str, *, reason: str | None = None, always: bool = False) -> dict[str, Any]:
        return await self.request("POST", f"/api/approvals/{call_id}/deny", json_body={"reason": reason, "always": always})

    async def answer(self, call_id: str, decision: str, *, reason: str | None = None,
                     arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Any decision: ``once``, ``always``, ``deny``, ``always_deny`` or ``edit`` (with arguments)."""
        body = {"decision": decision, "reason": reason, "arguments": dict(arguments) if arguments is not None else None}
        return await self.request("POST", f"/api/approvals/{call_id}", json_body=body)

    # -- tools and audit -------------------------------------------------------------------------

    async def tools(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/api/tools")

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None, *,
                        workspace: str | Path | None = None, approve: str | None = None) -> dict[str, Any]:
        """One call through the server's gate; ``approve`` answers its ask as ``--approve`` would."""
        body = {"arguments": dict(arguments or {}), "workspace": str(workspace) if workspace is not None else None,
                "approve": approve}
        return await self.request("POST", f"/api/tools/{name}/call", json_body=body)

    async def audit(self, *, run_id: str | None = None, session_id: int | None = None,
                    limit: int = 200) -> list[dict[str, Any]]:
        return await self.request("GET", "/api/audit", params={"run_id": run_id, "session_id": session_id,
                                                               "limit": limit})

    # -- live events -----------------------------------------------------------------------------

    async def events(self, *, last_event_id: int | None = None, kinds: Iterable[str] | None = None,
                     session_id: int | None = None, run_id: str | None = None,
                     on_state: Callable[[str, float], None] | None = None,
                     max_backoff_s: float = BACKOFF_MAX_S) -> AsyncIterator[ServerEvent]:
        """Follow the bus for as long as the caller iterates; a dropped connection is retried with
        backoff and resumed after the last event seen, so nothing is missed; if the server no
        longer holds those events, a ``gap`` event says to fetch the state again. A refusal (401,
        400) raises.

        ``on_state("connected", 0)`` is called each time the stream is open (from then on every
        event is in it), ``on_state("reconnecting", delay_s)`` before each retry.
        """
        last = last_event_id
        delay = BACKOFF_FIRST_S
        params = {"kinds": ",".join(kinds) if kinds is not None else None, "session_id": session_id,
                  "run_id": run_id}

        def seen(event_id: int) -> None:
            nonlocal last
            last = event_id

        def opened() -> None:
            nonlocal delay
            delay = BACKOFF_FIRST_S
            if on_state is not None:
                on_state("connected", 0.0)

        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                async for event in self._stream("GET", "/api/events", params=params, headers=headers,
                                                read_timeout_s=EVENTS_READ_TIMEOUT_S, seen=seen, opened=opened):
                    yield event
            except ServerUnavailable:
                pass
            # Dropped, or ended by a server that is stopping: try again, less and less often.
            if on_state is not None:
                on_state("reconnecting", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)


async def parse_sse(lines: AsyncIterator[str], seen: Callable[[int], None] | None = None) -> AsyncIterator[ServerEvent]:
    """Server-sent events from text lines. An ``id`` line moves the position (``seen``) even in an
    event without data (the server's keep-alive carries its position that way)."""
    event_id: int | None = None
    kind = "message"
    data: list[str] = []
    async for line in lines:
        if line == "":
            if event_id is not None and seen is not None:
                seen(event_id)
            if data:
                text = "\n".join(data)
                try:
                    payload = json.loads(text)
                except json.JSONDecodeError:
                    payload = {"text": text}
                yield ServerEvent(event_id, kind, payload if isinstance(payload, dict) else {"value": payload})
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            try:
                event_id = int(value)
            except ValueError:
                event_id = None
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)


def api_error(response: httpx.Response) -> ApiError:
    """The server's ``{"error": {"type", "message"}}`` as an ApiError."""
    try:
        error = response.json().get("error") or {}
        message, kind = str(error.get("message") or ""), str(error.get("type") or "error")
    except (ValueError, AttributeError):
        message, kind = "", "error"
    return ApiError(response.status_code, message or f"the server answered {response.status_code}", kind)


__all__ = ["ServerClient", "ServerEvent", "ServerUnavailable", "api_error", "parse_sse", "probe"]
