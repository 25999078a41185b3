"""Tool calls as SmolLM3 (and Hermes/ChatML models such as SmolLM2 or llama-server's) write them.

The model writes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` in its reply.
:class:`ToolCallSplitter` takes the streamed text apart: plain text passes through, each complete
call becomes one :class:`ToolCallDelta` carrying the verbatim markup (so history re-renders token for
token) and, when it does not parse, the reason. Small models drop the closing tag or wrap the JSON in
a code fence; both are repaired rather than lost.

:func:`call_schema` is the JSON schema a constrained decoder holds a call to: the name of an offered
tool and that tool's arguments.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from smoltui.backends.base import TextDelta, ToolCallDelta

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_ids = itertools.count(1)


def tool_name(tool: Mapping[str, Any]) -> str:
    """The name of an OpenAI-style tool dict (``{"type": "function", "function": {...}}``) or a bare one."""
    function = tool.get("function", tool)
    return str(function.get("name", ""))


def tool_parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool.get("function", tool)
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return dict(parameters)


def call_schema(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One call to one of ``tools``: ``{"name": <one of them>, "arguments": <its parameters>}``."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": tool_name(tool)}, "arguments": _clean(tool_parameters(tool))},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


_NAMED = ("properties", "patternProperties", "$defs", "definitions")


def _clean(schema: Any) -> Any:
    """Drop what only documents a schema (titles, examples): the grammar converter need not see it.
    Only keywords go: a parameter that happens to be *named* ``title`` stays."""
    if isinstance(schema, dict):
        return {k: {name: _clean(sub) for name, sub in v.items()} if k in _NAMED and isinstance(v, dict)
                else _clean(v)
                for k, v in schema.items() if k not in ("title", "examples", "$schema")}
    if isinstance(schema, list):
        return [_clean(item) for item in schema]
    return schema


def format_call(name: str, arguments: Mapping[str, Any]) -> str:
    """The canonical markup of a call (as SmolLM3's template documents it)."""
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': dict(arguments)}, ensure_ascii=False)}\n{CLOSE}"


def parse_call(body: str) -> tuple[str, str, str | None]:
    """(name, arguments as JSON text, problem) from the text between the tags."""
    text = body.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return "", text, f"the call is not valid JSON ({error.msg}; character {error.pos}): {text[:200]}"
    if not isinstance(value, dict):
        return "", text, f"the call must be a JSON object with name and arguments, not {type(value).__name__}"
    name = value.get("name")
    arguments = value.get("arguments", value.get("parameters", {}))
    if not isinstance(name, str) or not name:
        return "", text, 'the call has no "name" (expected {"name": ..., "arguments": {...}})'
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return name, arguments, f'the "arguments" of {name} are not a JSON object: {arguments[:200]}'
    if not isinstance(arguments, dict):
        return name, json.dumps(arguments), f'the "arguments" of {name} must be a JSON object'
    return name, json.dumps(arguments, ensure_ascii=False), None


def new_call_id() -> str:
    return f"call_{next(_ids)}"


class ToolCallSplitter:
    """Streaming: ``feed`` text, get text deltas and complete calls back; ``flush`` at the end."""

    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False
        self._constrained = False
        self._close_from = 0  # where in the buffer a closing tag may start to count

    @property
    def constrained(self) -> bool:
        """True while a grammar holds the open call: its end is the grammar's, not a closing tag.

        A constrained call's JSON string may hold the text ``</tool_call>`` (a small model looping
        inside a string writes it); that must not end the call half way through the string. When the
        constraint is released, only a closing tag written after that point ends the call.
        """
        return self._constrained

    @constrained.setter
    def constrained(self, value: bool) -> None:
        if self._constrained and not value:
            self._close_from = len(self._buffer)
        self._constrained = value

    def feed(self, text: str) -> list[TextDelta | ToolCallDelta]:
        self._buffer += text
        out: list[TextDelta | ToolCallDelta] = []
        while True:
            if not self._in_call:
                start = self._buffer.find(OPEN)
                if start < 0:
                    keep = _partial_tag(self._buffer, OPEN)  # "<tool_" may be the start of a tag
                    emit, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep:]
                    if emit:
                        out.append(TextDelta(emit))
                    return out
                if start:
                    out.append(TextDelta(self._buffer[:start]))
                self._buffer = self._buffer[start:]
                self._in_call = True
                self._close_from = len(OPEN)
            if self._constrained:
                return out
            end = self._buffer.find(CLOSE, self._close_from)
            if end < 0:
                return out
            raw = self._buffer[: end + len(CLOSE)]
            self._buffer = self._buffer[end + len(CLOSE):]
            self._in_call = False
            out.append(self._call(raw, raw[len(OPEN): end]))

    def flush(self, *, cut_at_tokens: int | None = None) -> list[TextDelta | ToolCallDelta]:
        """The reply ended: an unclosed call is parsed as it stands (small models drop the tag).

        ``cut_at_tokens``: the reply stopped at that token limit, so an unclosed call that does not
        parse was cut off, and its error says so (the model and the user then know what to change).
        """
        rest, self._buffer = self._buffer, ""
        if not rest:
            return []
        if self._in_call:
            self._in_call = False
            call = self._call(rest + CLOSE, rest[len(OPEN):])
            if call.error and cut_at_tokens is not None:
                call = replace(call, error=f"the reply reached its limit of {cut_at_tokens} tokens inside "
                                           f"this call, which was cut off: {call.error}")
            return [call]
        return [TextDelta(rest)]

    @property
    def pending_call_text(self) -> str:
        """What the open call holds so far, after its opening tag ("" outside a call)."""
        return self._buffer[len(OPEN):] if self._in_call else ""

    def take_back_run_on(self, piece: str) -> str | None:
        """Where the token that completed the opening tag ran on into the call (``></``, ``>{"``),
        forget the run-on and return the part of ``piece`` that ends the tag: the caller puts that in
        the token's place, so a constrained decoder writes the whole call. None: nothing to take back.

        With a vocabulary where ``<tool_call>`` is several tokens (SmolLM2's ``<``, ``tool``, ``_``,
        ``call``, ``>``), a token such as ``></`` would otherwise open and close an empty call before
        any grammar could hold it.
        """
        extra = self.pending_call_text
        if not self._in_call or not extra.strip() or len(extra) >= len(piece) or not piece.endswith(extra):
            return None
        self._buffer = self._buffer[: len(self._buffer) - len(extra)]
        return piece[: len(piece) - len(extra)]

    @property
    def in_call(self) -> bool:
        """True between an opening tag and its end: what streams now belongs to a call."""
        return self._in_call

    @staticmethod
    def _call(raw: str, body: str) -> ToolCallDelta:
        name, arguments, problem = parse_call(body)
        return ToolCallDelta(new_call_id(), name, arguments, raw=raw, error=problem)


def route(deltas: Sequence[Any], splitter: ToolCallSplitter | None, emit: Callable[[object], None]) -> None:
    """Emit ``deltas``, text first through ``splitter`` (when tools are offered) so calls come out whole."""
    for delta in deltas:
        if splitter is not None and isinstance(delta, TextDelta):
            for part in splitter.feed(delta.text):
                emit(part)
        else:
            emit(delta)


def flush_calls(splitter: ToolCallSplitter | None, emit: Callable[[object], None], *, stop: str,
                max_tokens: int) -> None:
    """The reply ended (``stop`` says why): emit what the splitter still holds, an unclosed call
    marked as cut off when the reply stopped at its token limit."""
    if splitter is not None:
        for part in splitter.flush(cut_at_tokens=max_tokens if stop == "length" else None):
            emit(part)


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def tools_system_block(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tools section SmolLM3's own template writes, for templates that do not render tools."""
    listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return ("You may call one or more functions to assist with the user query.\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n\n"
            f"<tools>\n{listing}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
