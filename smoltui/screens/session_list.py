"""The side panel of past chats: pick one to resume it."""

from __future__ import annotations

from collections.abc import Sequence

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from smoltui.orchestrator.store import Session


def _option_id(session_id: int) -> str:
    return f"session-{session_id}"


class SessionList(Vertical):
    """Lists sessions newest first and marks the one on screen; posts :class:`SessionList.Picked`."""

    DEFAULT_CSS = """
    SessionList {
        width: 30;
        height: 1fr;
        background: $surface;
        border-right: vkey $border-blurred;
        &:focus-within {
            border-right: vkey $primary;
        }
        & > .panel-title {
            width: 1fr;
            padding: 0 1;
            text-style: bold;
            color: $text-muted;
        }
        & > OptionList {
            height: 1fr;
            border: none;
            padding: 0 0 0 1;
            background: transparent;
        }
        & > .empty {
            padding: 1;
            color: $text-muted;
        }
    }
    """

    class Picked(Message):
        """The user chose a session (Enter or click)."""

        def __init__(self, session_id: int) -> None:
            super().__init__()
            self.session_id = session_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._sessions: list[Session] = []
        self._current: int | None = None
        # Attributes, not queries: a refresh may land while the screen is being torn down.
        self.options = OptionList()
        self._empty = Label("No saved chats yet.", classes="empty")

    def compose(self) -> ComposeResult:
        yield Label("Chats", classes="panel-title")
        yield self.options
        yield self._empty

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions)

    @property
    def highlighted_session(self) -> Session | None:
        index = self.options.highlighted
        if index is None or not 0 <= index < len(self._sessions):
            return None
        return self._sessions[index]

    def show(self, sessions: Sequence[Session], current: int | None) -> None:
        """Replace the list. The highlight follows the chat on screen, unless the user is moving
        through the list, in which case it stays where they left it."""
        previous = self.highlighted_session
        keep = previous.id if previous is not None and self.has_focus_within else current
        self._sessions = list(sessions)
        self._current = current
        options = self.options
        options.set_options(self._option(session) for session in self._sessions)
        self._empty.display = not self._sessions
        ids = [session.id for session in self._sessions]
        if keep in ids:
            options.highlighted = ids.index(keep)
        elif ids:
            options.highlighted = 0

    def _option(self, session: Session) -> Option:
        marker = "● " if session.id == self._current else ""
        count = session.message_count
        prompt = Content.from_markup(
            "[b]$marker$title[/b]\n[dim]$count[/dim]",
            marker=marker,
            title=session.title,
            count=f"{count} message{'s' if count != 1 else ''}",
        )
        return Option(prompt, id=_option_id(session.id))

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if 0 <= event.option_index < len(self._sessions):
            self.post_message(self.Picked(self._sessions[event.option_index].id))
