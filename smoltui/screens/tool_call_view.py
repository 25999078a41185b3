"""One tool call in the chat: what the model asked for, then how it ended (result or error).

Shown between the assistant turn that made the call and the next one. While the call waits for the
user, its approval card sits right under it (the chat screen mounts that card).

A call whose result (or arguments) names a file that exists, under the chat's artifacts or the
workspace (a chart's PNG, a report it wrote), can take the focus: ``o`` previews the file and
``O`` opens it outside, as in the run view.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static

from smoltui.orchestrator.chat_tools import describe_arguments
from smoltui.screens.preview import Previewable, PreviewScreen, files_named, key_hint, open_item


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
        &:focus {
            background: $boost;
            color: $text;
        }
    }
    """
    BINDINGS = [
        Binding("o", "preview", "Preview", id="chat.tool_preview"),
        Binding("O", "open_file", "Open", id="chat.tool_open"),
    ]

    def __init__(self, call_id: str, name: str, arguments: str, *, error: str | None = None,
                 outcome: str | None = None, ok: bool | None = None, roots: Sequence[Path] = ()) -> None:
        """``roots``: the folders whose files the call's result may name (its chat's artifacts,
        the workspace)."""
        super().__init__(markup=False)
        self.call_id = call_id
        self.tool = name
        self.arguments = arguments
        self.error = error
        self.outcome = outcome
        self.ok = ok
        self.roots = tuple(roots)
        self.files: list[Path] = []
        """Files the call produced or touched, that exist: what ``o`` previews (the first)."""

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
        self.files = files_named(f"{summary} {self.arguments}", self.roots) if ok and self.roots else []
        # Only a line with something to preview joins the focus chain (tab stops stay where they were).
        self.can_focus = bool(self.files)
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
        if self.files:
            keys = key_hint(self.app, self.BINDINGS, (("chat.tool_preview", "preview"), ("chat.tool_open", "open")))
            title.append(f"\n  {self.files[0].name}: {keys}", "dim" if not self.has_focus else "")
        self.update(title)
        self.set_class(self.ok is True, "-ok")
        self.set_class(self.ok is False, "-failed")

    def on_focus(self) -> None:
        self._show()  # the key hint brightens on the selected line

    def on_blur(self) -> None:
        self._show()

    def action_preview(self) -> None:
        if self.files:
            self.app.push_screen(PreviewScreen(Previewable(self.files[0].name, path=self.files[0])))

    def action_open_file(self) -> None:
        if self.files:
            self.run_worker(open_item(self.app, Previewable(self.files[0].name, path=self.files[0]), None),
                            group="tool-open", exclusive=True)

    @property
    def text(self) -> str:
        """What the view says, for tests and screen readers."""
        return str(self.render())
