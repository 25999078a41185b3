"""The set of tools on offer, and the one place a call is validated, run and turned into a result.

Bad calls never raise: an unknown tool, arguments that do not match the schema, a tool that raises,
hangs or floods its output all come back as a failed :class:`ToolResult` the model can read.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from smoltui.tools.base import Artifact, Tool, ToolContext, ToolResult

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "smoltui.tools"
MAX_RESULT_CHARS = 20_000


class ToolRegistry(Mapping[str, Tool]):
    """The one set of tools of a core (name -> Tool); it may change while the app runs (MCP)."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    def register(self, item: Tool) -> None:
        if item.name in self._tools and self._tools[item.name] is not item:
            raise ValueError(f"a tool named {item.name!r} is already registered")
        self._tools[item.name] = item

    def replace_origin(self, origin: str, tools: Iterable[Tool]) -> list[str]:
        """Make ``tools`` the whole set from ``origin`` (e.g. ``mcp:git`` after its list changed).

        The origin's old tools go; a new one whose name another origin already holds is left
        out rather than raising, because the change comes from outside (a server) while the app
        runs. Returns one line per tool left out.
        """
        kept = {name: item for name, item in self._tools.items() if item.origin != origin}
        problems = []
        added: dict[str, Tool] = {}
        for item in tools:
            if item.origin != origin:
                raise ValueError(f"tool {item.name!r} comes from {item.origin!r}, not {origin!r}")
            holder = kept.get(item.name) or added.get(item.name)
            if holder is not None:
                problems.append(f"{origin}: tool {item.name!r} left out: the name is taken by {holder.origin}")
                continue
            added[item.name] = item
        self._tools = {**kept, **added}
        return problems

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tools))

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    @property
    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self._tools.values()]

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register third-party tools; returns one line per plugin that could not be loaded."""
        problems = []
        for entry in importlib.metadata.entry_points(group=group):
            try:
                loaded = entry.load()
                items = loaded() if callable(loaded) and not isinstance(loaded, Tool) else loaded
                for item in items if isinstance(items, (list, tuple)) else [items]:
                    if not isinstance(item, Tool):
                        raise TypeError(f"{item!r} is not a smoltui tool")
                    self.register(item)
            except Exception as error:  # a broken plugin must not stop the app
                log.exception("tool plugin %s failed", entry.name)
                problems.append(f"tool plugin {entry.name!r} ({entry.value}) failed to load: {error}")
        return problems

    async def call(self, name: str, arguments: Mapping[str, Any] | None, ctx: ToolContext) -> ToolResult:
        """Validate and run one call; every failure becomes a structured error result."""
        started = time.perf_counter()
        item = self._tools.get(name)
        if item is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return ToolResult.failure("unknown_tool", f"there is no tool named {name!r} (tools: {known})")
        parsed, problem = validate_arguments(item, arguments)
        if parsed is None:
            return ToolResult.failure("invalid_arguments", problem)
        try:
            raw = await asyncio.wait_for(item.invoke(parsed, ctx), timeout=item.timeout_s)
        except TimeoutError:
            return ToolResult.failure(
                "timeout", f"{name} did not finish within {item.timeout_s:g} s", time.perf_counter() - started
            )
        except Exception as error:
            log.info("tool %s raised", name, exc_info=True)
            return ToolResult.failure("failed", f"{name} failed: {type(error).__name__}: {error}",
                                      time.perf_counter() - started)
        return _as_result(raw, time.perf_counter() - started)


def validate_arguments(item: Tool, arguments: Mapping[str, Any] | None) -> tuple[Any, str]:
    """(parsed arguments, "") or (None, a message naming each bad argument)."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        return None, f"arguments for {item.name} must be a JSON object, not {type(arguments).__name__}"
    try:
        return item.arguments.model_validate(dict(arguments)), ""
    except ValidationError as error:
        parts = []
        for problem in error.errors():
            where = ".".join(str(p) for p in problem["loc"]) or "arguments"
            parts.append(f"{where}: {problem['msg']}")
        return None, f"invalid arguments for {item.name}: " + "; ".join(parts)


def _as_result(raw: Any, duration: float) -> ToolResult:
    if isinstance(raw, ToolResult):
        return ToolResult(raw.ok, raw.content, raw.error, raw.error_kind, raw.artifacts, duration)
    artifacts: tuple[Artifact, ...] = ()
    if isinstance(raw, Artifact):
        artifacts, raw = (raw,), raw.summary
    try:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        raw, text = repr(raw), repr(raw)
    if len(text) > MAX_RESULT_CHARS:
        raw = text[:MAX_RESULT_CHARS] + f"… [truncated: {len(text):,} characters in all]"
    else:
        raw = json.loads(text)
    return ToolResult(ok=True, content=raw, artifacts=artifacts, duration_s=duration)
