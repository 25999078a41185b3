"""Tools from MCP servers (stdio transport), offered through the same registry and gate.

:class:`MCPHub` owns every configured server for the life of the process. It starts nothing until
:meth:`MCPHub.start` is awaited (the first chat turn or workflow that needs tools, or ``tools
list``); every caller of ``start()`` awaits the same start, and the servers start concurrently,
each within its own ``start_timeout_s``. A server that cannot start is one line in
:attr:`MCPHub.problems`, never an exception. A server's tools keep its JSON schemas (arguments are
checked against them before a call); when it sends ``notifications/tools/list_changed`` its tools
are listed again and the hub's ``on_change`` callback hears ``(origin, tools)``, so the owner can
call :meth:`ToolRegistry.replace_origin` and tell the UI. A server that dies later turns its
tools' calls into failed results that say so.

Risk from annotations
---------------------
MCP tool annotations are hints with defaults for when they are absent (``readOnlyHint`` false,
``destructiveHint`` true, ``openWorldHint`` true). Applying those defaults would make every
unannotated tool a destructive network tool, which says nothing; so only hints a server actually
sets are used, first match wins:

1. the server's ``risk`` in the config, when given, overrides everything (the spec warns that
   hints from an untrusted server are not to be relied on; this is how a user pins one);
2. ``openWorldHint: true`` → ``network``: the tool reaches beyond this machine, which is what the
   network setting guards, even when it only reads (like ``web_fetch``);
3. ``readOnlyHint: true`` → ``read``;
4. ``readOnlyHint: false`` or any ``destructiveHint`` → ``write``: the server says the tool
   changes its environment (destructively or, with ``destructiveHint: false``, only by adding);
5. otherwise (no annotations, or only ``title`` / ``idempotentHint`` / ``openWorldHint: false``)
   → ``execute``: smoltui cannot know what a foreign tool does.

So ``mcp-server-git``'s ``git_status`` (read-only, closed world) is ``read``, its ``git_commit``
(not read-only, not destructive) and ``git_reset`` (destructive) are ``write``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smoltui.errors import SmoltuiError
from smoltui.tools.base import Risk, Tool, ToolResult

log = logging.getLogger(__name__)

STDERR_LINES = 20  # kept per server, to say why one could not start or stopped
STOP_WAIT_S = 10.0  # the SDK's own shutdown (close stdin, wait, kill) is bounded well below this

ToolsChanged = Callable[[str, list[Tool]], Awaitable[None] | None]
"""``on_change(origin, tools)``: the whole current tool list of the server behind ``origin``."""


class MCPServerConfig(BaseModel):
    """One ``[[mcp.servers]]`` entry in the config file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    risk: Risk | None = Field(None, description="the risk of every tool of this server (default: from annotations)")
    prefix: bool = Field(True, description="name tools SERVER__TOOL so servers cannot clash")
    timeout_s: float = Field(60.0, gt=0, description="how long one tool call may take")
    start_timeout_s: float = Field(30.0, gt=0, description="how long the server may take to start")

    @property
    def origin(self) -> str:
        """The ``Tool.origin`` of this server's tools."""
        return f"mcp:{self.name}"


class MCPError(SmoltuiError):
    pass


def risk_from_annotations(annotations: Any) -> Risk:
    """The risk an MCP tool's annotations give it (see the module docstring for the order)."""
    if annotations is None:
        return "execute"
    if annotations.open_world_hint is True:
        return "network"
    if annotations.read_only_hint is True:
        return "read"
    if annotations.read_only_hint is False or annotations.destructive_hint is not None:
        return "write"
    return "execute"


def _schema_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model that checks arguments against a raw JSON schema and keeps them as given."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema or {"type": "object"})

    class Arguments(BaseModel):
        model_config = ConfigDict(extra="allow", title=f"{name}_arguments")

        @model_validator(mode="before")
        @classmethod
        def _check(cls, data: Any) -> Any:
            problems = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
            if problems:
                raise ValueError("; ".join(
                    f"{'.'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in problems[:5]
                ))
            return data

    return Arguments


def _leaf(error: BaseException) -> BaseException:
    """The first real error inside task-group wrapping, so the message names the cause."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


class _StderrTail(asyncio.Protocol):
    """A server's stderr: each line goes to the log file, the last few are kept for messages.

    Read through a pipe rather than shown: a chatty server must not scribble over the TUI.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.ended = asyncio.Event()
        self._partial = b""
        self._transport: asyncio.ReadTransport | None = None

    async def open(self) -> Any:
        """The file to hand the subprocess as its stderr."""
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb", buffering=0)
        try:
            self._transport, _ = await asyncio.get_running_loop().connect_read_pipe(lambda: self, reader)
        except BaseException:
            reader.close()
            os.close(write_fd)
            raise
        return os.fdopen(write_fd, "w")

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._partial = self._partial[-4096:]
        for raw in lines:
            self._add(raw)

    def eof_received(self) -> bool | None:
        self._add(self._partial)
        self._partial = b""
        self.ended.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()

    def _add(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if line:
            self.lines.append(line)
            log.debug("MCP server %s: %s", self.name, line)

    @property
    def last_line(self) -> str:
        return self.lines[-1] if self.lines else ""

    async def finish(self, wait_s: float = 1.0) -> None:
        """Read to the end (bounded: a grandchild may hold the pipe open), then close."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), wait_s)
        if self._transport is not None:
            self._transport.close()


class MCPConnection:
    """One server: owns the subprocess and the session in one background task.

    The session lives in that task because the SDK's transport must be entered and left in the
    same task; calls from other tasks go through it.
    """

    def __init__(self, config: MCPServerConfig, *, on_change: ToolsChanged | None = None) -> None:
        self.config = config
        self.on_change = on_change
        self.tools: list[Tool] = []
        self._session: Any = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._list_changed = False
        self._error: BaseException | None = None
        self._stopped_because: str | None = None
        self._stderr = _StderrTail(config.name)
        self._task: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"MCP server {self.config.name} ({self.config.command})"

    async def start(self, timeout_s: float | None = None) -> list[Tool]:
        """Start the server and list its tools; raises :class:`MCPError` with one line if it cannot."""
        timeout_s = self.config.start_timeout_s if timeout_s is None else timeout_s
        self._task = asyncio.create_task(self._run(), name=f"mcp:{self.config.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            await self.close()
            raise MCPError(f"{self.label} could not start: no answer within {timeout_s:g} s") from None
        if self._session is None:
            if self._stopping:
                raise MCPError(f"{self.label} could not start: smoltui closed it while it started")
            error = _leaf(self._error) if self._error is not None else None
            reason = f"{type(error).__name__}: {error}" if error is not None else "it stopped"
            said = self._stderr.last_line
            raise MCPError(f"{self.label} could not start: {reason}" + (f" (it said: {said})" if said else ""))
        return self.tools

    async def _run(self) -> None:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=self.config.command, args=self.config.args, env=self.config.env or None, cwd=self.config.cwd
        )
        try:
            errlog = await self._stderr.open()
            try:
                async with stdio_client(params, errlog=errlog) as (read, write):
                    errlog.close()  # the child has its own copy; ours would keep the pipe from ending
                    async with ClientSession(read, write, message_handler=self._on_message) as session:
                        await session.initialize()
                        self.tools = await self._list_tools(session)
                        self._session = session
                        self._ready.set()
                        await self._serve(session)
            finally:
                errlog.close()
        except BaseException as error:  # noqa: BLE001 - reported through start() and calls, never raised
            self._error = error
            if self._ready.is_set() and not self._stopping:  # a failed start is the hub's one warning
                log.warning("%s stopped: %s", self.label, _leaf(error))
        finally:
            self._session = None
            await self._stderr.finish()  # before start() reads it: a dying server's last words
            self._ready.set()

    async def _serve(self, session: Any) -> None:
        """Wait for close(), re-listing the tools each time the server says they changed."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            if self._list_changed:
                self._list_changed = False
                try:
                    self.tools = await self._list_tools(session)
                except Exception as error:  # a server that dies mid-listing keeps its last tools
                    log.warning("%s: could not list its changed tools: %s", self.label, _leaf(error))
                    continue
                await self._tell_change()

    async def _tell_change(self) -> None:
        if self.on_change is None:
            return
        try:
            outcome = self.on_change(self.config.origin, list(self.tools))
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:  # the owner's bug must not take the server down with it
            log.exception("%s: the tool-change callback failed", self.label)

    async def _on_message(self, message: Any) -> None:
        import mcp.types as types

        if isinstance(message, types.ToolListChangedNotification):
            # Listed in the serving task, not here: this handler runs inside the SDK's dispatch.
            self._list_changed = True
            self._wake.set()
        elif isinstance(message, Exception):
            log.info("%s: transport error: %s", self.label, message)

    async def _list_tools(self, session: Any) -> list[Tool]:
        import mcp.types as types

        listed, cursor = [], None
        while True:
            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return [self._wrap(t) for t in listed]

    def _wrap(self, remote: Any) -> Tool:
        remote_name = remote.name

        async def call(**arguments: Any) -> ToolResult:
            return await self.call(remote_name, arguments)

        name = f"{self.config.name}__{remote_name}" if self.config.prefix else remote_name
        schema = dict(remote.input_schema or {"type": "object", "properties": {}})
        return Tool(
            name=name,
            description=(remote.description or remote_name).strip(),
            risk=self.config.risk or risk_from_annotations(remote.annotations),
            arguments=_schema_model(name, schema),
            func=call,
            context_param=None,
            is_async=True,
            timeout_s=self.config.timeout_s,
            json_schema=schema,
            origin=self.config.origin,
        )

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """One call; a server that is gone is a failed result that says so, never an exception."""
        from mcp.shared.exceptions import MCPError as ProtocolError
        from mcp_types import CONNECTION_CLOSED

        session = self._session
        if session is None or self._stopped_because is not None:
            return ToolResult.failure("failed", self._gone())
        try:
            result = await session.call_tool(tool, arguments)
        except ProtocolError as error:
            if error.code == CONNECTION_CLOSED:
                self._stopped_because = "its connection closed"
                with contextlib.suppress(TimeoutError):  # its last words, if it is dying right now
                    await asyncio.wait_for(self._stderr.ended.wait(), 0.5)
                return ToolResult.failure("failed", self._gone())
            return ToolResult.failure("failed", f"{self.config.name}/{tool}: {error.message}")
        texts = [getattr(part, "text", None) or f"<{getattr(part, 'type', 'content')}>" for part in result.content]
        text = "\n".join(texts)
        if result.is_error:
            return ToolResult.failure("failed", f"{self.config.name}/{tool}: {text or 'the tool reported an error'}")
        content = result.structured_content if result.structured_content is not None else text
        return ToolResult(ok=True, content=content)

    def _gone(self) -> str:
        if self._stopping:
            return f"{self.label} is not running (smoltui closed it)"
        why = self._stopped_because or "it stopped"
        said = self._stderr.last_line
        return (f"{self.label} is not running ({why}" + (f"; it said: {said}" if said else "")
                + "); its tools cannot be called until smoltui restarts")

    async def close(self) -> None:
        """Stop the server (close its input, then the SDK's bounded wait and kill)."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        if self._session is None:  # still starting: there is no session to end politely
            task.cancel()
        _, pending = await asyncio.wait({task}, timeout=STOP_WAIT_S)
        if pending:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_WAIT_S)


class MCPHub:
    """Every configured MCP server, started lazily and once, for one process.

    Build it in the composition root, hand ``on_change`` a callback, ``await start()`` when tools
    are first needed, read :attr:`tools` / :meth:`tools_by_origin` and :attr:`problems`, and
    ``await close()`` on the way out. After ``close()`` the hub stays closed: ``start()`` does
    nothing.
    """

    def __init__(self, servers: Sequence[MCPServerConfig], *, on_change: ToolsChanged | None = None) -> None:
        self.servers = list(servers)
        self.on_change = on_change
        self.problems: list[str] = []
        self._connections: list[MCPConnection] = []
        self._live: list[MCPConnection] = []
        self._starting: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        return self._starting is not None and self._starting.done()

    @property
    def connections(self) -> list[MCPConnection]:
        """The servers that started (and have not been closed)."""
        return list(self._live)

    @property
    def tools(self) -> list[Tool]:
        """The current tools of every running server, in config order."""
        return [item for connection in self._live for item in connection.tools]

    def tools_by_origin(self) -> dict[str, list[Tool]]:
        """origin (``mcp:NAME``) -> that server's current tools, for ``replace_origin``."""
        return {connection.config.origin: list(connection.tools) for connection in self._live}

    async def start(self) -> None:
        """Start every server (concurrently); later and concurrent calls await the same start."""
        if self._closed:
            return
        if self._starting is None:
            self._connections = [MCPConnection(config, on_change=self._changed) for config in self.servers]
            self._starting = asyncio.ensure_future(self._start_all())
        # Shielded: one caller giving up must not cancel the start the others are waiting for.
        await asyncio.shield(self._starting)

    async def _start_all(self) -> None:
        outcomes = await asyncio.gather(*(c.start() for c in self._connections), return_exceptions=True)
        for connection, outcome in zip(self._connections, outcomes, strict=True):
            if isinstance(outcome, MCPError):
                self.problems.append(str(outcome))
            elif isinstance(outcome, BaseException):
                self.problems.append(f"{connection.label} could not start: {type(outcome).__name__}: {outcome}")
            else:
                self._live.append(connection)
        for problem in self.problems:
            log.warning("%s", problem)

    async def _changed(self, origin: str, tools: list[Tool]) -> None:
        if self.on_change is None:
            return
        outcome = self.on_change(origin, tools)
        if inspect.isawaitable(outcome):
            await outcome

    async def close(self) -> None:
        """Stop every server; waits for a start in progress to give up first."""
        self._closed = True
        await asyncio.gather(*(c.close() for c in self._connections))
        if self._starting is not None:
            await asyncio.wait({self._starting})
        self._live = []


async def connect_servers(configs: list[MCPServerConfig]) -> tuple[list[MCPConnection], list[str]]:
    """Start every configured server; returns the live connections and one line per failure.

    Kept for callers that have not moved to :class:`MCPHub` (the ``tools`` command).
    """
    hub = MCPHub(configs)
    await hub.start()
    return hub.connections, hub.problems
