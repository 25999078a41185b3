"""Search every chat: results update as you type; Enter opens the chat at the matching message."""

from __future__ import annotations

import asyncio

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from smoltui.orchestrator.store import SearchHit, Store
from smoltui.orchestrator.transcript import readable_snippet

_ROLE_NAMES = {"user": "you", "assistant": "assistant", "system": "system", "tool": "tool"}


def snippet_content(snippet: str) -> Content:
    """The store's snippet with its matches highlighted (never parsed as markup), tool calls readable."""
    return Content.assemble(*((text, "bold reverse") if hit else text for text, hit in readable_snippet(snippet)))


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
        hits = await self._store.search(query)
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
