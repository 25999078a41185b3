"""One chat message: who said it, a thinking block, the Markdown body and the reply's stats.

A live reply is streamed into its Markdown widgets with ``Markdown.get_stream`` behind a throttle
(:mod:`smoltui.screens.throttle`): what arrives is appended, at most six times a second, so the
document is never re-rendered whole, and never parsed once per token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Label, Markdown, Static

from smoltui.screens.throttle import ThrottledMarkdown

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def _keep_line_breaks(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def typed_text_parser() -> MarkdownIt:
    """Markdown for what a person typed: a line break they entered stays a line break."""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("keep_line_breaks", _keep_line_breaks)
    return parser


def format_stats(stats: Mapping[str, Any] | None) -> str:
    """``42 tokens · 12.3 tok/s · TTFT 0.21 s``, plus ``cut off`` for a reply that did not end
    (esc, a signal, an error, a process that died) or why it stopped early."""
    if not stats:
        return ""
    bits: list[str] = []
    tokens = stats.get("completion_tokens")
    if isinstance(tokens, int | float):
        bits.append(f"{int(tokens)} token{'' if int(tokens) == 1 else 's'}")
    speed = stats.get("decode_tok_s")
    if isinstance(speed, int | float):
        bits.append(f"{speed:.1f} tok/s")
    ttft = stats.get("ttft_s")
    if isinstance(ttft, int | float):
        bits.append(f"TTFT {ttft:.2f} s")
    stop = stats.get("stop_reason")
    if stop == "cancelled" or stats.get("cut_off"):
        bits.append("cut off")  # stopped (esc, a signal) or its process died mid-reply
    elif stop == "length":
        bits.append("cut at max_tokens")
    return " · ".join(bits)


class MessageView(Vertical, can_focus=True):
    """A message in the chat log. Focusable so a reply can be picked (and copied) by keyboard."""

    DEFAULT_CSS = """
    MessageView {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
        &.-user {
            border-left: outer $secondary;
            background: $boost;
        }
        &.-assistant {
            border-left: outer $primary;
        }
        &.-error {
            border-left: outer $error;
        }
        &.-highlight {
            background: $accent 20%;
        }
        &:focus {
            background-tint: $foreground 6%;
        }
        & > .role {
            text-style: bold;
            color: $text-muted;
        }
        &.-user > .role {
            color: $secondary;
        }
        &.-assistant > .role {
            color: $primary;
        }
        & > Collapsible {
            border: none;
            padding: 0;
            margin: 0;
            background: transparent;
            & > Contents {
                padding: 0 0 0 2;
                border-left: blank;
            }
            & > CollapsibleTitle {
                padding: 0;
                color: $text-muted;
            }
        }
        & > Collapsible Markdown {
            color: $text-muted;
            text-style: italic;
        }
        & Markdown {
            margin: 0;
            padding: 0;
            background: transparent;
            /* Blocks keep their spacing between each other, not after the last one. */
            & > MarkdownBlock:last-child {
                margin-bottom: 0;
            }
        }
        & > .stats {
            color: $text-muted;
        }
        & > .error {
            color: $error;
        }
        &.-user > .stats {
            display: none;
        }
    }
    """

    def __init__(
        self,
        role: str,
        content: str = "",
        *,
        thinking: str | None = None,
        stats: Mapping[str, Any] | None = None,
        message_id: int | None = None,
        status: str = "",
    ) -> None:
        super().__init__(classes=f"-{role}")
        self.role = role
        self.message_id = message_id
        self._thinking = thinking or ""
        self._stats = dict(stats) if stats else None
        self._status = status
        self._body_stream: ThrottledMarkdown | None = None
        self._thinking_stream: ThrottledMarkdown | None = None
        self._answer_started = bool(content)
        self.finished = not status
        """False while a reply is still streaming into this view."""
        # Children are kept as attributes, not queried: the app reads them (to copy, to check an
        # action) even while this view is being removed.
        self.body = Markdown(
            content, classes="body", parser_factory=typed_text_parser if role == "user" else None
        )
        self.thinking_block: Collapsible | None = None
        self._thinking_markdown: Markdown | None = None
        if self._thinking:
            # A stored reply's reasoning starts folded: the answer is what one comes back for.
            self._thinking_markdown = Markdown(self._thinking, classes="thinking")
            self.thinking_block = Collapsible(self._thinking_markdown, title="Thinking", collapsed=True)
        self._stats_line = Static(self._stats_text(), classes="stats", markup=False)
        self._stats_line.display = bool(self._stats_text())

    def compose(self) -> ComposeResult:
        yield Label(ROLE_LABELS.get(self.role, self.role.title()), classes="role")
        if self.thinking_block is not None:
            yield self.thinking_block
        yield self.body
        if self.role == "assistant":
            yield self._stats_line

    # -- what the rest of the app reads -----------------------------------------------------------

    @property
    def markdown(self) -> str:
        """The message's Markdown source, as shown (and as the copy action copies it)."""
        return self.body.source

    @property
    def thinking(self) -> str:
        return self._thinking_markdown.source if self._thinking_markdown is not None else ""

    @property
    def stats_text(self) -> str:
        """The line under a reply: its stats, what it waits for, or nothing."""
        return self._stats_text()

    # -- streaming ---------------------------------------------------------------------------------

    def set_status(self, status: str) -> None:
        """Show what a pending reply is waiting for, in place of the stats line."""
        self._status = status
        self._refresh_stats()

    async def write_thinking(self, delta: str) -> None:
        if self._thinking_stream is None:
            if self._thinking_markdown is None:
                self._thinking_markdown = Markdown(classes="thinking")
                self.thinking_block = Collapsible(self._thinking_markdown, title="Thinking", collapsed=False)
                await self.mount(self.thinking_block, before=self.body)
            self._thinking_stream = ThrottledMarkdown(self._thinking_markdown)
        self._thinking_stream.write(delta)

    async def write(self, delta: str) -> None:
        if not self._answer_started:
            self._answer_started = True
            # The answer has begun: fold the reasoning away so the answer is what one reads.
            await self._stop_thinking_stream()
            block = self.thinking_block
            if block is not None:
                block.collapsed = True
        if self._body_stream is None:
            self._body_stream = ThrottledMarkdown(self.body)
        self._body_stream.write(delta)

    async def finish(self, stats: Mapping[str, Any] | None = None, *, error: str | None = None) -> None:
        """Flush the streams and show the stats line (or the error that ended the reply)."""
        await self.stop_streams()
        block = self.thinking_block
        if block is not None and self._answer_started:
            block.collapsed = True
        self._stats = dict(stats) if stats else self._stats
        self._status = ""
        self.finished = True
        if error is not None:
            self.add_class("-error")
            await self.mount(Static(error, classes="error", markup=False))
        self._refresh_stats()

    async def stop_streams(self) -> None:
        await self._stop_thinking_stream()
        if self._body_stream is not None:
            stream, self._body_stream = self._body_stream, None
            await stream.stop()

    async def _stop_thinking_stream(self) -> None:
        if self._thinking_stream is not None:
            stream, self._thinking_stream = self._thinking_stream, None
            await stream.stop()

    def _stats_text(self) -> str:
        if self._status:
            return self._status
        return format_stats(self._stats)

    def _refresh_stats(self) -> None:
        text = self._stats_text()
        self._stats_line.update(text)
        self._stats_line.display = bool(text)
