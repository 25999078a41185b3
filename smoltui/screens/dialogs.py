"""Small modal dialogs with typed answers: a one-line text prompt and a yes/no confirmation.

Callers await them from a worker with ``push_screen_wait`` and get the answer back as a value.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class TextPromptDialog(ModalScreen[str | None]):
    """Ask for one line of text; answers the stripped text, or None when cancelled or left blank."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, value: str = "", *, placeholder: str = "",
                 help_text: str = "enter to save · esc to cancel") -> None:
        super().__init__(classes="dialog")
        self._title = title
        self._value = value
        self._placeholder = placeholder
        self._help = help_text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self._title, classes="dialog-title", markup=False)
            yield Input(self._value, placeholder=self._placeholder, select_on_focus=True)
            yield Label(self._help, classes="dialog-help", markup=False)

    @on(Input.Submitted)
    def _save(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; answers True only when the user confirms."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="dialog.yes"),
        Binding("n,escape", "answer(False)", "No", id="dialog.no"),
    ]

    def __init__(self, question: str, *, confirm_label: str = "Yes", cancel_label: str = "Cancel") -> None:
        super().__init__(classes="dialog")
        self._question = question
        self._confirm_label = confirm_label
        self._cancel_label = cancel_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self._question, classes="dialog-title", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self._confirm_label} (y)", variant="error", id="confirm")
                yield Button(f"{self._cancel_label} (n)", id="cancel")

    def on_mount(self) -> None:
        # Focus starts on Cancel so a stray Enter never confirms something destructive.
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class QuitDialog(ConfirmDialog):
    """What ctrl+q asks while runs are in progress: a class of its own, so it is asked once at a time."""
