"""Search every chat: results update as you type; Enter opens the chat at the matching message."""

from __future__ import annotations

import asyncio
import re

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from smoltui.backends.tool_calls import CLOSE as CALL_CLOSE
from smoltui.backends.tool_calls import OPEN as CALL_OPEN
from smoltui.orchestrator.store import HIGHLIGHT_CLOSE, HIGHLIGHT_OPEN, SearchHit, Store

_MARKED = re.compile(
    re.escape(HIGHLIGHT_OPEN)
    + r"([^"
    + re.escape(HIGHLIGHT_OPEN + HIGHLIGHT_CLOSE)
    + r"]*)"
    + re.escape(HIGHLIGHT_CLOSE)
)
_ROLE_NAMES = {"user": "you", "assistant": "assistant", "system": "system", "tool": "tool"}


CALL_MARK = "⚙"
"""Stands for a ``<tool_call>`` tag in a snippet; the closing tag is dropped."""
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


def snippet_content(snippet: str) -> Content:
    """Turn the store's ``[match]`` markers into highlighted spans (never parsed as markup).

    Tool-call markup in an assistant message reads as ``⚙ {"name": …}`` instead of raw tags.
    """
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
    parts: list[str | tuple[str, str]] = []
    start = 0
    for index in range(1, len(plain) + 1):
        if index == len(plain) or flags[index] != flags[start]:
            piece = plain[start:index]
            parts.append((piece, "bold reverse") if flags[start] else piece)
            start = index
    return Content.assemble(*parts)


class SearchScreen(ModalScreen[SearchHit | None]):
    """Answers the chosen hit, or None when closed without choosing."""

    CSS_PATH = "search.tcss"
    DEBOUNCE_S = 0.15
    """Wait this long after the last keystroke before querying, so typing a word costs one search."""

    HELP = "type to search titles and messages · enter opens · esc closes"

    BINDINGS = [
        Binding("escape", "close", "Close", id="search.close"),
        Binding("down", "results", "Results", show=False, id="search.results"),
    ]

    def __init__(self, store: Store, query: str = "") -> None:
        super().__init__()
        self._store = store
        self._query = query
        self._hits: list[SearchHit] = []
        # Attributes, not queries: a search may finish while the dialog is closing.
        self._results = OptionList(id="search-results")
        self._status = Label(self.HELP, id="search-status")

    def compose(self) -> ComposeResult:
        with Vertical(id="search-box"):
            yield Label("Search chats", id="search-title")
            yield Input(self._query, placeholder="words to find…", id="search-input")
            yield self._results
            yield self._status

    def on_mount(self) -> None:
        self._results.display = False
        if self._query:
            self._run_search(self._query)

    @property
    def hits(self) -> list[SearchHit]:
        return list(self._hits)

    @on(Input.Changed, "#search-input")
    def _changed(self, event: Input.Changed) -> None:
        self._run_search(event.value)

    # exclusive: a newer keystroke cancels the pending search, which is what debounces it.
    @work(exclusive=True, group="search")
    async def _run_search(self, query: str) -> None:
        if not query.strip():
            self._show([], self.HELP)
            return
        await asyncio.sleep(self.DEBOUNCE_S)
        hits = await asyncio.to_thread(self._store.search, query)
        count = len(hits)
        self._show(hits, f"{count} match{'es' if count != 1 else ''}" if hits else "no matches")

    def _show(self, hits: list[SearchHit], status: str) -> None:
        self._hits = hits
        results = self._results
        results.set_options(self._option(hit) for hit in hits)
        results.display = bool(hits)
        if hits:
            results.highlighted = 0
        self._status.update(status)

    @staticmethod
    def _option(hit: SearchHit) -> Option:
        where = _ROLE_NAMES.get(hit.role or "", "title")
        heading = Content.assemble((hit.session_title, "bold"), (f"  {where}", "dim"))
        body = snippet_content(hit.snippet)
        return Option(Content.assemble(heading, "\n", body))

    @on(Input.Submitted, "#search-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        results = self._results
        index = results.highlighted if results.highlighted is not None else 0
        if 0 <= index < len(self._hits):
            self.dismiss(self._hits[index])

    @on(OptionList.OptionSelected, "#search-results")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self._hits[event.option_index])

    def action_results(self) -> None:
        results = self._results
        if self._hits and not results.has_focus:
            results.focus()

    def action_close(self) -> None:
        self.dismiss(None)
