"""The tool protocol: a typed Python callable becomes a tool the model and workflows can call.

    @tool(risk="read")
    def read_file(path: str, max_bytes: int = 65536, *, ctx: ToolContext) -> dict:
        \"\"\"Read a text file inside the workspace.

        Args:
            path: File path, relative to the workspace root.
            max_bytes: Read at most this many bytes.
        \"\"\"

The name, description and JSON schema come from the signature and the docstring (argument
descriptions included). A parameter annotated :class:`ToolContext` is filled in by the caller and
never shown to the model. Arguments are validated with pydantic before the call.

A tool whose risk depends on what it is asked to do (the seed's ``filesystem`` reads or writes by
its ``action``) passes ``call_risk``: :meth:`Tool.risk_for` then gives the risk of one call, and the
static ``risk`` is the highest risk any call can have, so whoever reads only ``risk`` errs on the
safe side.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, create_model

from smoltui.tools.calls import RISKS, Risk

__all__ = ["RISKS", "Artifact", "Risk", "Tool", "ToolContext", "ToolResult", "make_tool", "tool"]


@dataclass(frozen=True)
class Artifact:
    """A large or binary result kept as a file; the model only sees ``summary``."""

    kind: str  # "dataframe", "image", "file", "text"
    path: Path
    mime: str
    summary: str


@dataclass
class ToolContext:
    """What a tool may know about where it runs: the workspace and where artifacts go."""

    workspace: Path
    artifacts_dir: Path
    session_id: int | None = None
    run_id: str | None = None
    task_id: str | None = None
    notices: list[str] = field(default_factory=list)

    def notice(self, text: str) -> None:
        """Something the user should hear once (e.g. reduced sandbox isolation)."""
        self.notices.append(text)


@dataclass(frozen=True)
class ToolResult:
    """What a call produced, JSON-able, for the model and for the audit trail."""

    ok: bool
    content: Any = None
    error: str | None = None
    error_kind: str | None = None  # unknown_tool, invalid_arguments, denied, timeout, failed
    artifacts: tuple[Artifact, ...] = ()
    duration_s: float = 0.0

    @classmethod
    def failure(cls, kind: str, message: str, duration_s: float = 0.0) -> ToolResult:
        return cls(ok=False, error=message, error_kind=kind, duration_s=duration_s)

    def for_model(self) -> dict[str, Any]:
        """The part the model sees: content or error, plus artifact summaries."""
        if not self.ok:
            return {"error": self.error, "kind": self.error_kind}
        out: dict[str, Any] = {"result": self.content}
        if self.artifacts:
            out["artifacts"] = [{"kind": a.kind, "path": str(a.path), "summary": a.summary} for a in self.artifacts]
        return out

    def summary(self, limit: int = 200) -> str:
        text = f"error ({self.error_kind}): {self.error}" if not self.ok else _short(self.content)
        if self.artifacts:
            text += " | " + "; ".join(a.summary for a in self.artifacts)
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    risk: Risk
    arguments: type[BaseModel]
    func: Callable[..., Any]
    context_param: str | None
    is_async: bool
    timeout_s: float = 60.0
    json_schema: dict[str, Any] | None = None
    """A schema given as is (MCP tools); otherwise it is derived from ``arguments``."""
    origin: str = "builtin"
    call_risk: Callable[[Mapping[str, Any]], Risk] | None = None
    """The risk of one call from its (validated) arguments; None: every call has ``risk``."""

    def risk_for(self, arguments: Mapping[str, Any] | None) -> Risk:
        """The risk of one call with these arguments (validate them first).

        Falls back to the static ``risk`` (the highest) when the arguments do not say, so a
        call is never judged less risky than it might be.
        """
        if self.call_risk is None:
            return self.risk
        try:
            risk = self.call_risk(arguments or {})
        except Exception:  # a malformed call is judged by the tool's highest risk
            return self.risk
        return risk if risk in RISKS else self.risk

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON schema of the arguments, as offered to the model."""
        if self.json_schema is not None:
            return self.json_schema
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    def schema(self) -> dict[str, Any]:
        """OpenAI-style function description (what SmolLM3's ``<tools>`` block expects)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    async def invoke(self, arguments: BaseModel, ctx: ToolContext) -> Any:
        # Attributes, not model_dump(): nested pydantic arguments reach the tool as typed objects.
        kwargs = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        kwargs.update(arguments.model_extra or {})  # schema-only tools (MCP) keep their raw arguments
        if self.context_param:
            kwargs[self.context_param] = ctx
        if self.is_async:
            return await typing.cast(Awaitable[Any], self.func(**kwargs))
        import asyncio

        return await asyncio.to_thread(self.func, **kwargs)


def tool(
    *, risk: Risk, name: str | None = None, timeout_s: float = 60.0,
    call_risk: Callable[[Mapping[str, Any]], Risk] | None = None,
) -> Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function into a :class:`Tool` (its schema from the signature and docstring)."""
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {RISKS}, not {risk!r}")

    def wrap(func: Callable[..., Any]) -> Tool:
        return make_tool(func, risk=risk, name=name, timeout_s=timeout_s, call_risk=call_risk)

    return wrap


def make_tool(
    func: Callable[..., Any], *, risk: Risk, name: str | None = None, timeout_s: float = 60.0,
    call_risk: Callable[[Mapping[str, Any]], Risk] | None = None,
) -> Tool:
    doc = docstring_parser.parse(inspect.getdoc(func) or "")
    described = {p.arg_name: (p.description or "").strip() for p in doc.params}
    hints = typing.get_type_hints(func)
    fields: dict[str, Any] = {}
    context_param = None
    for param in inspect.signature(func).parameters.values():
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {func.__name__}: *args/**kwargs cannot be described to a model")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, Field(default, description=described.get(param.name) or None))
    tool_name = name or func.__name__
    model = create_model(  # type: ignore[call-overload]
        f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    description = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p) or tool_name
    return Tool(
        name=tool_name,
        description=description.strip(),
        risk=risk,
        arguments=model,
        func=func,
        context_param=context_param,
        is_async=inspect.iscoroutinefunction(func),
        timeout_s=timeout_s,
        call_risk=call_risk,
    )
