"""Reading back the tool calls a reply holds as markup (``<tool_call>{…}</tool_call>``).

A reply is stored exactly as generated, markup and all, so the next prompt renders the tokens the
KV cache already holds. These helpers split such a text into what people read and the calls it
made; the orchestrator uses them once, when a reply is stored (and when an old database is
migrated), so nothing above it parses markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from smoltui.backends.tool_calls import CLOSE, OPEN, parse_call


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str
    """As JSON text (the model's, normalised where it parsed)."""
    error: str | None
    raw: str


def split_markup(content: str) -> tuple[str, list[str]]:
    """A stored assistant turn as (the text people read, the raw calls it made)."""
    text: list[str] = []
    calls: list[str] = []
    rest = content
    while True:
        start = rest.find(OPEN)
        if start < 0:
            text.append(rest)
            break
        text.append(rest[:start])
        end = _call_end(rest, start)
        if end < 0:
            calls.append(rest[start:])
            break
        calls.append(rest[start:end + len(CLOSE)])
        rest = rest[end + len(CLOSE):]
    return "".join(text).strip(), calls


def parse_markup(content: str) -> tuple[str, list[ParsedCall]]:
    """(the text people read, each call parsed)."""
    text, raws = split_markup(content)
    calls = []
    for raw in raws:
        name, arguments, problem = parse_call(raw.removeprefix(OPEN).removesuffix(CLOSE))
        calls.append(ParsedCall(name, arguments, problem, raw))
    return text, calls


def _call_end(text: str, start: int) -> int:
    """Where the call opened at ``start`` closes: the first closing tag after which its body parses.

    A constrained call's JSON string may hold ``</tool_call>`` itself (the call ended where its
    grammar did); a malformed call has no such point, and ends at its first closing tag.
    """
    first = end = text.find(CLOSE, start)
    while end >= 0:
        if parse_call(text[start + len(OPEN):end])[2] is None:
            return end
        end = text.find(CLOSE, end + 1)
    return first


def result_summary(content: str, limit: int = 160) -> tuple[bool, str, str | None]:
    """(ok, one line, the tool's name if it says) from a stored tool result (the JSON the model read)."""
    try:
        result: Any = json.loads(content)
    except json.JSONDecodeError:
        result = {"result": content}
    ok = isinstance(result, dict) and "error" not in result
    if isinstance(result, dict):
        summary = str(result.get("result") if ok else result.get("error"))
        name = result.get("name") if isinstance(result.get("name"), str) else None
    else:
        summary, name = content, None
    summary = " ".join(summary.split())
    return ok, summary if len(summary) <= limit else summary[: limit - 1] + "…", name
