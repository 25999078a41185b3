"""What a chat looks like to a person: the transcript a screen shows and readable search hits.

Messages are stored as the model wrote them (a reply keeps its ``<tool_call>`` markup, so the next
prompt renders the tokens its KV cache holds) and every call is a row of its own. This module turns
both into entries a front end can show as they are: text without markup, and each call with its
arguments (the ones that ran), how it ended and who decided. No screen parses the model's markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from smoltui.backends.call_markup import result_summary, split_markup
from smoltui.backends.tool_calls import CLOSE as CALL_CLOSE
from smoltui.backends.tool_calls import OPEN as CALL_OPEN
from smoltui.orchestrator.store import HIGHLIGHT_CLOSE, HIGHLIGHT_OPEN, SearchHit, Store


@dataclass(frozen=True)
class Said:
    """A message as people read it (an assistant turn without its call markup).

    A reply that did not end normally (stopped, failed, or its process died mid-reply) is
    ``cut_off``, and its ``stats`` say so too (``"cut_off": True``), so a view that shows the stats
    line shows the mark."""

    id: int
    role: str
    text: str
    thinking: str | None
    stats: dict[str, Any] | None
    created_at: float
    cut_off: bool = False


@dataclass(frozen=True)
class Called:
    """A tool call the model made: ``ok`` None while it waits (or if its process died first)."""

    call_id: str
    name: str
    arguments: str
    error: str | None
    ok: bool | None
    summary: str | None
    decision: str | None
    decided_by: str | None
    message_id: int


Entry = Said | Called


async def load_transcript(store: Store, session_id: int) -> list[Entry]:
    """A chat's messages and calls in order; tool results are folded into their calls. A reply
    this process is still writing is left out: its front end shows it live, and whole once done."""
    messages = [m for m in await store.messages(session_id) if m.id not in store.writing]
    calls = await store.message_tool_calls(session_id)
    by_message: dict[int, list[Called]] = {}
    answered: set[int] = set()
    for call in calls:
        by_message.setdefault(call.message_id, []).append(Called(
            call.call_id, call.name, call.arguments, call.error, call.ok, call.summary, call.decision,
            call.decided_by, call.message_id))
        if call.result_message_id is not None:
            answered.add(call.result_message_id)
    entries: list[Entry] = []
    for m in messages:
        if m.role == "tool":
            if m.id not in answered:  # a result whose call row is gone: still shown, as a call
                ok, summary, name = result_summary(m.content)
                entries.append(Called(f"m{m.id}", name or "tool", "{}", None, ok, summary, None, None, m.id))
            continue
        text = split_markup(m.content)[0] if m.role == "assistant" else m.content
        made = by_message.get(m.id, [])
        stats = {**(m.stats or {}), "cut_off": True} if m.cut_off else m.stats
        if text or m.thinking or stats or not made:
            entries.append(Said(m.id, m.role, text, m.thinking, stats, m.created_at, m.cut_off))
        entries.extend(made)
    return entries


# -- search ----------------------------------------------------------------------------------------

CALL_MARK = "⚙"
"""Stands for a ``<tool_call>`` tag in a snippet; the closing tag is dropped."""


@dataclass(frozen=True)
class Found:
    """A search hit, its snippet as (text, matched) spans on one line, markup made readable."""

    hit: SearchHit
    spans: tuple[tuple[str, bool], ...]


async def search_chats(store: Store, query: str, limit: int = 50) -> list[Found]:
    return [Found(hit, readable_snippet(hit.snippet)) for hit in await store.search(query, limit)]


_MARKED = re.compile(
    re.escape(HIGHLIGHT_OPEN)
    + r"([^"
    + re.escape(HIGHLIGHT_OPEN + HIGHLIGHT_CLOSE)
    + r"]*)"
    + re.escape(HIGHLIGHT_CLOSE)
)


_PARTIAL_MIN = 5  # the shortest cut-off piece of a tag taken as one ("<tool", "call>")


def _tag_pattern() -> re.Pattern[str]:
    # Whole tags anywhere; at the snippet's ends also a tag cut by the snippet window
    # (the end of one at the start, the start of one at the end), next to FTS's "…".
    def alternatives(pieces: set[str]) -> str:
        return "|".join(re.escape(piece) for piece in sorted(pieces, key=len, reverse=True))

    tags = (CALL_OPEN, CALL_CLOSE)
    suffixes = {tag[i:] for tag in tags for i in range(1, len(tag) - _PARTIAL_MIN + 1)}
    prefixes = {tag[:i] for tag in tags for i in range(_PARTIAL_MIN, len(tag))}
    return re.compile(
        rf"(?P<open>{re.escape(CALL_OPEN)})\s*"
        rf"|\s*{re.escape(CALL_CLOSE)}"
        rf"|(?:(?<=^…)|^)(?P<head>{alternatives(suffixes)})\s*"
        rf"|\s*(?P<tail>{alternatives(prefixes)})(?=…?$)"
    )


_TAGS = _tag_pattern()


def _is_opening(match: re.Match[str], text: str) -> bool:
    if match.group("open"):
        return True
    if tail := match.group("tail"):
        return not tail.startswith("</")
    head = match.group("head") or ""
    # "call>" ends both tags: it opens a call when the call's JSON follows.
    return not head.startswith("/") and text.startswith("{", match.end())


def _readable_calls(text: str, marked: list[bool]) -> tuple[str, list[bool]]:
    """Replace tool-call tags (whole or cut) in ``text``; ``marked`` flags each character's highlight.

    An opening tag becomes ``⚙ `` (highlighted when the query matched inside it); a closing
    tag is dropped.
    """
    out: list[str] = []
    flags: list[bool] = []
    position = 0
    for match in _TAGS.finditer(text):
        out.append(text[position : match.start()])
        flags.extend(marked[position : match.start()])
        if _is_opening(match, text):
            hit = any(marked[match.start() : match.end()])
            if match.group("tail"):
                out.append(f" {CALL_MARK}" if match.start() > 0 else CALL_MARK)
                flags.extend([False, hit] if match.start() > 0 else [hit])
            else:
                out.append(f"{CALL_MARK} ")
                flags.extend([hit, False])
        position = match.end()
    out.append(text[position:])
    flags.extend(marked[position:])
    return "".join(out), flags


def readable_snippet(snippet: str) -> tuple[tuple[str, bool], ...]:
    """The store's snippet as (text, matched) spans on one line; tool-call markup in an assistant
    message reads as ``⚙ {"name": …}`` instead of raw tags."""
    snippet = " ".join(snippet.split())  # one line per hit, whatever the message's layout
    text: list[str] = []
    marked: list[bool] = []
    position = 0
    for match in _MARKED.finditer(snippet):
        before = snippet[position : match.start()]
        text.append(before)
        marked.extend([False] * len(before))
        text.append(match.group(1))
        marked.extend([True] * len(match.group(1)))
        position = match.end()
    text.append(snippet[position:])
    marked.extend([False] * (len(snippet) - position))
    plain, flags = _readable_calls("".join(text), marked)
    spans: list[tuple[str, bool]] = []
    start = 0
    for index in range(1, len(plain) + 1):
        if index == len(plain) or flags[index] != flags[start]:
            spans.append((plain[start:index], flags[start]))
            start = index
    return tuple(spans)
