"""One tool call in the chat: what the model asked for, then how it ended (result or error).

Shown between the assistant turn that made the call and the next one. While the call waits for the
user, its approval card sits right under it (the chat screen mounts that card).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from smoltui.orchestrator.chat_tools import describe_arguments


class ToolCallView(Static):
    DEFAULT_CSS = """
    ToolCallView {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 2;
        border-left: outer $accent;
        color: $text-muted;
        &.-failed {
            border-left: outer $error;
        }
        &.-ok {
            border-left: outer $success;
        }
    }
    """

    def __init__(self, call_id: str, name: str, arguments: str, *, error: str | None = None,
                 outcome: str | None = None, ok: bool | None = None) -> None:
        super().__init__(markup=False)
        self.call_id = call_id
        self.tool = name
        self.arguments = arguments
        self.error = error
        self.outcome = outcome
        self.ok = ok

    def on_mount(self) -> None:
        self._show()

    def ran_with(self, arguments: str) -> None:
        """A person edited the call's arguments (JSON text): the line shows the ones that run, at
        once, not only when the call ends."""
        self.arguments = arguments
        if self.is_mounted:
            self._show()

    def finish(self, ok: bool, summary: str, *, arguments: str | None = None) -> None:
        """The call has ended; ``arguments``: what it ran with, when a person edited them."""
        self.ok, self.outcome = ok, summary
        if arguments is not None:
            self.arguments = arguments
        if self.is_mounted:
            self._show()

    def _show(self) -> None:
        title = Text.assemble(("⚙ ", "bold"), (self.tool or "(unreadable call)", "bold"))
        if self.error:
            title.append(f"  {self.error}", "red")
        else:
            title.append(f"({describe_arguments(self.arguments)})")
        if self.ok is None:
            title.append("\n  … waiting", "italic")
        else:
            mark, style = ("✓ ", "green") if self.ok else ("✗ ", "red")
            title.append("\n  " + mark, style)
            title.append(self.outcome or "", "" if self.ok else "red")
        self.update(title)
        self.set_class(self.ok is True, "-ok")
        self.set_class(self.ok is False, "-failed")

    @property
    def text(self) -> str:
        """What the view says, for tests and screen readers."""
        return str(self.render())
