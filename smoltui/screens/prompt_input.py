"""The message box: a multi-line TextArea where Enter sends and ctrl+j starts a new line."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    """Type a message; Enter posts :class:`PromptInput.Submitted`, ctrl+j inserts a newline."""

    DEFAULT_CSS = """
    PromptInput {
        height: auto;
        min-height: 3;
        max-height: 10;
        border: tall $border-blurred;
        &:focus {
            border: tall $primary;
        }
    }
    """

    # Priority: TextArea inserts a newline for Enter in its own key handler, which runs before
    # ordinary bindings; a priority binding gets the key first, and still honours the keymap.
    BINDINGS = [
        Binding("enter", "submit", "Send", id="chat.send", priority=True),
        Binding(
            "ctrl+j,shift+enter",
            "newline",
            "Newline",
            id="chat.newline",
            priority=True,
            tooltip="Insert a line break (shift+enter too, where the terminal reports it)",
        ),
    ]

    class Submitted(Message):
        """The user pressed the send key with some text in the box."""

        def __init__(self, prompt_input: PromptInput, text: str) -> None:
            super().__init__()
            self.prompt_input = prompt_input
            self.text = text

        @property
        def control(self) -> PromptInput:
            return self.prompt_input

    def __init__(
        self,
        text: str = "",
        *,
        placeholder: str = "",
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            text,
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            placeholder=placeholder,
            id=id,
            classes=classes,
        )

    # A priority binding runs as soon as the app reads the key, while the characters typed just
    # before it may still wait in this widget's queue (fast typing, a slow machine, a terminal that
    # pastes without bracketed paste). Both actions therefore queue their work behind those keys.

    def action_submit(self) -> None:
        self.call_later(self._submit)

    def action_newline(self) -> None:
        self.call_later(self._insert_newline)

    def _submit(self) -> None:
        # An empty or blank box does nothing: no message, no newline.
        if self.text.strip():
            self.post_message(self.Submitted(self, self.text))

    def _insert_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)
