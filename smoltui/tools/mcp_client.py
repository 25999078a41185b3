"""Tools from MCP servers (stdio transport), offered through the same registry and gate.

Each configured server runs as a subprocess for the life of the app. Its tools keep their own JSON
schemas (arguments are validated against them before a call) and default to the ``execute`` risk,
since smoltui cannot know what a foreign tool does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smoltui.errors import SmoltuiError
from smoltui.tools.base import RISKS, Risk, Tool, ToolResult

log = logging.getLogger(__name__)


class MCPServerConfig(BaseModel):
    """One ``[[mcp.servers]]`` entry in the config file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    risk: Risk = "execute"
    prefix: bool = Field(True, description="name tools SERVER__TOOL so servers cannot clash")
    timeout_s: float = Field(60.0, gt=0)


class MCPError(SmoltuiError):
    pass


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


class MCPConnection:
    """A running MCP server: owns the subprocess and the session in one background task."""

    def __init__(self, config: MCPServerConfig) -> None:
        if config.risk not in RISKS:
            raise MCPError(f"MCP server {config.name}: unknown risk {config.risk!r}")
        self.config = config
        self.tools: list[Tool] = []
        self._session: Any = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 30.0) -> list[Tool]:
        self._task = asyncio.create_task(self._run(), name=f"mcp:{self.config.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            await self.close()
            raise MCPError(f"MCP server {self.config.name} did not answer within {timeout_s:g} s") from None
        if self._error is not None:
            raise MCPError(
                f"MCP server {self.config.name} ({self.config.command}) could not start: "
                f"{type(self._error).__name__}: {self._error}"
            )
        return self.tools

    async def _run(self) -> None:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=self.config.command, args=self.config.args, env=self.config.env or None, cwd=self.config.cwd
        )
        try:
            with open(os.devnull, "w") as errlog:  # a chatty server must not scribble over the TUI
                async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    self.tools = [self._wrap(t) for t in listed.tools]
                    self._session = session
                    self._ready.set()
                    await self._stop.wait()
        except BaseException as error:  # noqa: BLE001 - reported through start()/calls
            self._error = error
            log.warning("MCP server %s stopped: %s", self.config.name, error)
        finally:
            self._session = None
            self._ready.set()

    def _wrap(self, remote: Any) -> Tool:
        remote_name = remote.name

        async def call(**arguments: Any) -> ToolResult:
            return await self.call(remote_name, arguments)

        name = f"{self.config.name}__{remote_name}" if self.config.prefix else remote_name
        schema = dict(remote.input_schema or {"type": "object", "properties": {}})
        return Tool(
            name=name,
            description=(remote.description or remote_name).strip(),
            risk=self.config.risk,
            arguments=_schema_model(name, schema),
            func=call,
            context_param=None,
            is_async=True,
            timeout_s=self.config.timeout_s,
            json_schema=schema,
            origin=f"mcp:{self.config.name}",
        )

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        if self._session is None:
            raise MCPError(f"MCP server {self.config.name} is not running")
        result = await self._session.call_tool(tool, arguments)
        texts = [getattr(part, "text", None) or f"<{getattr(part, 'type', 'content')}>" for part in result.content]
        text = "\n".join(texts)
        if result.is_error:
            return ToolResult.failure("failed", f"{self.config.name}/{tool}: {text or 'the tool reported an error'}")
        content = result.structured_content if result.structured_content is not None else text
        return ToolResult(ok=True, content=content)

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)


async def connect_servers(configs: list[MCPServerConfig]) -> tuple[list[MCPConnection], list[str]]:
    """Start every configured server; returns the live connections and one line per failure."""
    connections, problems = [], []
    for config in configs:
        connection = MCPConnection(config)
        try:
            await connection.start()
        except MCPError as error:
            problems.append(str(error))
            continue
        connections.append(connection)
    return connections, problems
