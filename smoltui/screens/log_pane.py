"""The live log pane: a tail of workflow run logs with a level filter, search, follow/pause, timestamps.

It tails the store (:class:`~smoltui.orchestrator.run_log.RunLogTail`), not only the in-process bus, so
a run driven by another process (``smoltui run`` in a second terminal) shows up too; the host calls
:meth:`LogPane.nudge` on bus events to poll at once. Polls run off the event loop, one at a time.

Lines live in a bounded buffer (``deque(maxlen=max_lines)``) holding every run's lines, so switching
:attr:`LogPane.run_id` is instant. The view is a Line API :class:`~textual.scroll_view.ScrollView`:
only the visible lines are rendered, whatever the number of lines. Each line is
:func:`~smoltui.orchestrator.run_log.format_line`, the text ``smoltui logs`` prints.
"""

from __future__ import annotations

import asyncio
import re
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable
from heapq import merge
from typing import ClassVar, Literal

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input, Static

from smoltui.errors import StoreError
from smoltui.orchestrator.run_log import LEVEL_RANK, LogRecord, RunLogTail, format_line
from smoltui.orchestrator.run_store import RunStore

LevelFilter = Literal["all", "warning", "error"]
LEVEL_FILTERS: tuple[LevelFilter, ...] = ("all", "warning", "error")
_LEVEL_LABELS = {"all": "all", "warning": "warning+", "error": "error"}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TIMESTAMP_WIDTH = len("00:00:00 ")


def _record_id(record: LogRecord) -> int:
    return record.id


def _clean(text: str) -> str:
    """One screen line: tabs expanded, a newline shown as ⏎, other control characters as �."""
    if "\t" in text:
        text = text.expandtabs()
    return _CONTROL.sub(lambda m: "⏎" if m.group() == "\n" else "�", text)


class LogLines(ScrollView, can_focus=True):
    """The virtualised line view of a :class:`LogPane` (renders only what is on screen)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "log-lines--muted",
        "log-lines--warning",
        "log-lines--error",
        "log-lines--match",
        "log-lines--current",
    }

    DEFAULT_CSS = """
    LogLines {
        height: 1fr;
        background: $surface;
        color: $text;
        overflow: auto auto;
        &:focus { background-tint: $foreground 5%; }
        & > .log-lines--muted { color: $text-muted; }
        & > .log-lines--warning { color: $warning; }
        & > .log-lines--error { color: $error; text-style: bold; }
        & > .log-lines--match { background: $warning 70%; color: $text; }
        & > .log-lines--current { background: $primary 40%; text-style: bold; }
    }
    """

    def __init__(self, pane: LogPane, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.pane = pane
        self.records: list[LogRecord] = []  # the filtered lines (the pane owns the list)
        self.timestamps = True
        self.show_run = True
        self.term = ""  # lower-case search term ("" = none)
        self.current_id: int | None = None  # the selected search match
        self._width = 0
        self._cache: LRUCache[tuple[int, bool], Strip] = LRUCache(1024)

    # -- the pane drives these -------------------------------------------------------------------

    def line_width(self, record: LogRecord) -> int:
        """Characters in a record's line (cheap: no formatting)."""
        width = len(record.message) + len(record.task_id or "run") + len(record.kind) + 4
        if self.timestamps:
            width += _TIMESTAMP_WIDTH
        if self.show_run:
            width += len(record.run_id) + 3
        return width

    def reset(self) -> None:
        """The lines or the display options changed: forget rendered lines, size from scratch."""
        self._cache.clear()
        self._width = max((self.line_width(r) for r in self.records), default=0)
        self.virtual_size = Size(self._width, len(self.records))
        self.refresh()

    def appended(self, added: list[LogRecord]) -> None:
        if added:
            self._width = max(self._width, max(self.line_width(r) for r in added))
        self.virtual_size = Size(self._width, len(self.records))
        self.refresh()

    def plain(self, record: LogRecord) -> str:
        """A record's line as the user reads it."""
        return _clean(format_line(record, timestamps=self.timestamps, show_run=self.show_run))

    def search_text(self, record: LogRecord) -> str:
        """What search looks at: the line after its timestamp, lower-cased (a typed term holds no
        control characters, so the raw text will do)."""
        text = f"{record.task_id or 'run'}: {record.kind}: {record.message}"
        if self.show_run:
            text = f"[{record.run_id}] {text}"
        return text.lower()

    # -- Line API --------------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if index >= len(self.records):
            return Strip.blank(width, base)
        record = self.records[index]
        key = (record.id, record.id == self.current_id)
        strip = self._cache.get(key)
        if strip is None:
            text = self._line_text(record, key[1], base)
            strip = Strip(text.render(self.app.console), text.cell_len)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _line_text(self, record: LogRecord, current: bool, base: Style) -> Text:
        plain = self.plain(record)
        text = Text(plain, style=base, no_wrap=True, end="")
        prefix = _TIMESTAMP_WIDTH if self.timestamps else 0
        if self.show_run:
            prefix += len(record.run_id) + 3
        if prefix:
            text.stylize(self._style("log-lines--muted"), 0, prefix)
        if record.level != "info":
            text.stylize(self._style(f"log-lines--{record.level}"), prefix, len(plain))
        if current:
            text.stylize(self._style("log-lines--current"))
        if self.term:
            start = _TIMESTAMP_WIDTH if self.timestamps else 0
            lowered = plain.lower()
            match_style = self._style("log-lines--match")
            while (found := lowered.find(self.term, start)) != -1:
                text.stylize(match_style, found, found + len(self.term))
                start = found + len(self.term)
        return text

    def _style(self, name: str) -> Style:
        """A component's style, its colours blended over the view; only highlights keep a background."""
        style = self.get_component_rich_style(name)
        if name == "log-lines--match":
            return style
        if name == "log-lines--current":  # the line keeps its colours on a highlighted background
            return Style(bgcolor=style.bgcolor, bold=style.bold)
        return Style(color=style.color, bold=style.bold, italic=style.italic, dim=style.dim)

    # -- scrolling -------------------------------------------------------------------------------

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value and round(new_value) < self.max_scroll_y:
            self.pane.follow = False  # the user scrolled up to read: stop jumping to the end

    def action_scroll_end(self) -> None:
        self.pane.action_follow_end()

    def on_resize(self) -> None:
        # A shorter view leaves the end below the fold: following means staying at the end.
        if self.pane.follow:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True, x_axis=False, force=True)


class LogPane(Widget):
    """Live log lines of the selected run (``run_id``) or of all runs (``run_id = None``)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "cycle_level", "Level", id="logs.level"),
        Binding("slash", "search", "Search", id="logs.search"),
        Binding("n", "next_match", "Next", id="logs.next_match"),
        Binding("N", "previous_match", "Prev", id="logs.previous_match"),
        Binding("f", "toggle_follow", "Follow", id="logs.follow"),
        Binding("end,G", "follow_end", "End", id="logs.end", show=False),
        Binding("t", "toggle_timestamps", "Time", id="logs.timestamps"),
        Binding("escape", "clear_search", "Clear search", id="logs.clear_search"),
    ]

    DEFAULT_CSS = """
    LogPane {
        height: 1fr;
        layout: vertical;
        & > #log-pane-status {
            height: 1;
            padding: 0 1;
            background: $panel;
            color: $text-muted;
        }
        & > #log-pane-search {
            display: none;
            height: 3;
        }
        &.-searching > #log-pane-search { display: block; }
    }
    """

    run_id: reactive[str | None] = reactive(None, init=False)
    """The run shown (``None``: all runs, each line with its run id)."""
    level: reactive[LevelFilter] = reactive("all", init=False)
    """Lowest level shown: ``all``, ``warning`` (warnings and errors) or ``error``."""
    follow: reactive[bool] = reactive(True, init=False)
    """Keep the newest line in view."""
    timestamps: reactive[bool] = reactive(True, init=False)
    search: reactive[str] = reactive("", init=False)
    """The search term (case-insensitive; matches are highlighted, ``n``/``N`` jump between them)."""

    def __init__(
        self,
        run_store: RunStore,
        *,
        max_lines: int = 50_000,
        backfill: int = 2_000,
        run_id: str | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.run_store = run_store
        self.max_lines = max_lines
        self.tail = RunLogTail(run_store, backfill=min(backfill, max_lines))
        self._buffer: deque[LogRecord] = deque(maxlen=max_lines)
        self._filtered: list[LogRecord] = []
        self._matches: list[int] = []  # ids of the filtered lines the search matches
        self._history_loaded: set[str] = set()
        self._poll_lock = asyncio.Lock()
        self._poll_again = False
        self._view = LogLines(self, id="log-pane-lines")
        self.set_reactive(LogPane.run_id, run_id)

    def compose(self) -> ComposeResult:
        yield Static(id="log-pane-status", markup=False)
        yield Input(placeholder="search (Enter: find, Esc: clear)", id="log-pane-search")
        yield self._view

    def on_mount(self) -> None:
        self._rebuild()
        # Not nudge(): while its mount handler runs, a widget is not yet "mounted".
        self._poll_soon()

    def focus(self, scroll_visible: bool = True) -> LogPane:
        """Focus the line view (the keys work from there)."""
        self._view.focus(scroll_visible)
        return self

    # -- feeding ---------------------------------------------------------------------------------

    def nudge(self) -> None:
        """Poll the store now (without waiting); a poll already running polls once more after."""
        if not self.is_mounted:
            return  # on_mount polls
        self._poll_soon()

    def _poll_soon(self) -> None:
        if self._poll_lock.locked():
            self._poll_again = True
            return
        self.run_worker(self.poll(), group="log-pane-poll", exit_on_error=False)

    async def poll(self) -> int:
        """Read what is new in the store and show it; returns the number of new records."""
        added = 0
        async with self._poll_lock:
            while True:
                self._poll_again = False
                try:
                    records = await self.tail.poll()
                    self.add_records(records)
                    added += len(records)
                    run_id = self.run_id
                    if run_id is not None and run_id not in self._history_loaded:
                        self._history_loaded.add(run_id)
                        older = await self.tail.history(run_id)
                        self._merge_history(older)
                        added += len(older)
                except StoreError as error:  # the store closed under us (app exit) or a disk error
                    self.log.warning(f"log pane: {error}")
                    break
                if not self._poll_again:
                    break
        return added

    def add_records(self, records: Iterable[LogRecord]) -> None:
        """Append records (oldest first, newer than those already here) to the buffer and the view."""
        new = list(records)
        if not new:
            return
        buffer = self._buffer
        buffer.extend(new)
        oldest = buffer[0].id
        dropped = 0
        if self._filtered and self._filtered[0].id < oldest:
            dropped = bisect_left(self._filtered, oldest, key=_record_id)
            del self._filtered[:dropped]
        if self._matches and self._matches[0] < oldest:
            del self._matches[: bisect_left(self._matches, oldest)]
        added = [r for r in new if r.id >= oldest and self._shows(r)]
        self._filtered.extend(added)
        term = self._view.term
        if term:
            search_text = self._view.search_text
            self._matches.extend(r.id for r in added if term in search_text(r))
        view = self._view
        view.appended(added)
        if self.follow:
            view.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        elif dropped:  # paused: keep the same lines on screen while old ones leave the buffer
            view.scroll_to(y=max(0, view.scroll_y - dropped), animate=False, immediate=True, force=True)
        self._update_status()

    def _merge_history(self, older: list[LogRecord]) -> None:
        if not older:
            return
        anchor = self._top_id()
        merged = list(merge(older, self._buffer, key=_record_id))
        self._buffer = deque(merged[-self.max_lines:], maxlen=self.max_lines)
        self._rebuild(anchor)

    # -- filtering -------------------------------------------------------------------------------

    def _shows(self, record: LogRecord) -> bool:
        if self.run_id is not None and record.run_id != self.run_id:
            return False
        return self.level == "all" or LEVEL_RANK[record.level] >= LEVEL_RANK[self.level]

    def _rebuild(self, anchor: int | None = None) -> None:
        """Filter the buffer again (a filter, the run or the display changed), keeping the view in place."""
        view = self._view
        view.timestamps = self.timestamps
        view.show_run = self.run_id is None
        view.term = self.search.lower()
        run_id, floor = self.run_id, LEVEL_RANK.get(self.level, 0)
        self._filtered = [
            r for r in self._buffer
            if (run_id is None or r.run_id == run_id) and LEVEL_RANK[r.level] >= floor
        ]
        view.records = self._filtered
        self._find_matches()
        view.reset()
        if self.follow:
            view.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        elif anchor is not None:
            top = bisect_left(self._filtered, anchor, key=_record_id)
            view.scroll_to(y=top, animate=False, immediate=True, force=True)
        self._update_status()

    def _find_matches(self) -> None:
        view = self._view
        term = view.term
        if not term:
            self._matches = []
            view.current_id = None
            return
        search_text = view.search_text
        self._matches = [r.id for r in self._filtered if term in search_text(r)]
        if view.current_id is not None and view.current_id not in set(self._matches):
            view.current_id = None

    def _top_id(self) -> int | None:
        index = round(self._view.scroll_y)
        return self._filtered[index].id if index < len(self._filtered) else None

    # -- watchers --------------------------------------------------------------------------------

    def watch_run_id(self) -> None:
        self._rebuild(self._top_id())
        if self.run_id is not None and self.run_id not in self._history_loaded and self.is_mounted:
            self.nudge()  # backfill the run's older lines

    def watch_level(self) -> None:
        self._rebuild(self._top_id())

    def watch_timestamps(self) -> None:
        self._rebuild(self._top_id())

    def watch_search(self) -> None:
        view = self._view
        view.current_id = None
        view.term = self.search.lower()
        self._find_matches()
        view.reset()
        self._update_status()

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._view.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self._update_status()

    # -- actions ---------------------------------------------------------------------------------

    def action_cycle_level(self) -> None:
        self.level = LEVEL_FILTERS[(LEVEL_FILTERS.index(self.level) + 1) % len(LEVEL_FILTERS)]

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_follow_end(self) -> None:
        self.follow = True
        self._view.scroll_end(animate=False, immediate=True, x_axis=False, force=True)

    def action_toggle_timestamps(self) -> None:
        self.timestamps = not self.timestamps

    def action_search(self) -> None:
        search = self.query_one("#log-pane-search", Input)
        search.value = self.search
        self.add_class("-searching")
        search.focus()

    def action_clear_search(self) -> None:
        self.remove_class("-searching")
        self.search = ""
        self._view.focus()

    def action_next_match(self) -> None:
        self._jump(forward=True)

    def action_previous_match(self) -> None:
        self._jump(forward=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("next_match", "previous_match"):
            return bool(self.search)
        if action == "clear_search":
            return bool(self.search) or self.has_class("-searching")
        return True

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "log-pane-search":
            return
        event.stop()
        self.remove_class("-searching")
        self._view.focus()
        term = event.value.strip()
        if term != self.search:
            self.search = term
        if term:
            self._select_first_match()

    # -- search ----------------------------------------------------------------------------------

    @property
    def match_count(self) -> int:
        return len(self._matches)

    @property
    def current_match(self) -> int | None:
        """1-based position of the selected match among the matches (None: no selection)."""
        current = self._view.current_id
        if current is None or not self._matches:
            return None
        return bisect_left(self._matches, current) + 1

    def _select_first_match(self) -> None:
        """After a search: the newest match when following, else the first one from the top of the view."""
        if not self._matches:
            self._update_status()
            return
        if self.follow:
            self._select(self._matches[-1])
            return
        top = self._top_id()
        index = bisect_left(self._matches, top) if top is not None else 0
        self._select(self._matches[index % len(self._matches)])

    def _jump(self, *, forward: bool) -> None:
        if not self._matches:
            return
        current = self._view.current_id
        if current is None:
            if forward:
                self._select_first_match()
            else:
                self._select(self._matches[-1])
            return
        if forward:
            index = bisect_right(self._matches, current) % len(self._matches)
        else:
            index = (bisect_left(self._matches, current) - 1) % len(self._matches)
        self._select(self._matches[index])

    def _select(self, record_id: int) -> None:
        view = self._view
        view.current_id = record_id
        view._cache.clear()
        index = bisect_left(self._filtered, record_id, key=_record_id)
        height = view.scrollable_content_region.height or 1
        top = round(view.scroll_y)
        if not top <= index < top + height:
            self.follow = False  # looking at a match back in time: don't jump away from it
            view.scroll_to(y=max(0, index - height // 2), animate=False, immediate=True, force=True)
        view.refresh()
        self._update_status()

    # -- reading ---------------------------------------------------------------------------------

    @property
    def line_count(self) -> int:
        """Lines that pass the filters (the view's height)."""
        return len(self._filtered)

    @property
    def buffered_count(self) -> int:
        """Lines held (every run's), at most ``max_lines``."""
        return len(self._buffer)

    def filtered_lines(self) -> list[str]:
        """Every line that passes the filters, as displayed (also those scrolled out of view)."""
        return [self._view.plain(r) for r in self._filtered]

    def visible_lines(self) -> list[str]:
        """The text of the lines on screen now (what :meth:`LogLines.render_line` draws), trailing spaces cut."""
        view = self._view
        height = view.scrollable_content_region.height
        rows = min(height, max(0, len(self._filtered) - round(view.scroll_y)))
        return [view.render_line(y).text.rstrip() for y in range(rows)]

    @property
    def status_text(self) -> str:
        return self._status().plain

    def _status(self) -> Text:
        parts = [f"run {self.run_id}" if self.run_id else "all runs",
                 f"level: {_LEVEL_LABELS[self.level]}",
                 "following" if self.follow else "paused"]
        if not self.timestamps:
            parts.append("no timestamps")
        if self.search:
            current = self.current_match
            position = f"{current}/{len(self._matches)}" if current else f"{len(self._matches)} matches"
            parts.append(f"search “{self.search}” {position}")
        parts.append(f"{len(self._filtered):,} of {len(self._buffer):,} lines")
        return Text(" · ".join(parts), no_wrap=True, overflow="ellipsis")

    def _update_status(self) -> None:
        if self.is_mounted:
            self.query_one("#log-pane-status", Static).update(self._status())
            self.refresh_bindings()


__all__ = ["LEVEL_FILTERS", "LevelFilter", "LogLines", "LogPane"]
