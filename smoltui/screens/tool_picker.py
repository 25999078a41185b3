"""Pick the tools this chat may call: each with its risk and what it does; space toggles, enter keeps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList
from textual.widgets.selection_list import Selection

from smoltui.tools.base import Tool

RISK_STYLES = {"read": "green", "write": "yellow", "execute": "red", "network": "magenta"}


class ToolPickerDialog(ModalScreen[list[str] | None]):
    """Answers the chosen tool names (empty: tools off), or None when cancelled."""

    CSS_PATH = "dialogs.tcss"
    DEFAULT_CSS = """
    ToolPickerDialog SelectionList {
        height: auto;
        max-height: 14;
    }
    """
    BINDINGS = [
        Binding("enter", "keep", "Keep", id="tools.keep", priority=True),
        Binding("escape", "cancel", "Cancel", id="tools.cancel"),
        Binding("ctrl+a", "all", "All / none", id="tools.all"),
    ]

    def __init__(self, tools: Iterable[Tool], chosen: Sequence[str]) -> None:
        super().__init__(classes="dialog -wide")
        self.tools = sorted(tools, key=lambda t: (t.risk != "read", t.name))
        self.chosen = set(chosen)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Tools this chat may call", classes="dialog-title")
            yield SelectionList[str](*(self._selection(t) for t in self.tools), id="tool-list")
            yield Label("space toggles · enter keeps · ctrl+a all/none · esc cancels; each call still "
                        "asks first unless [approval] says otherwise", classes="dialog-help", markup=False)

    def _selection(self, tool: Tool) -> Selection[str]:
        description = " ".join(tool.description.split())
        if len(description) > 56:
            description = description[:55] + "…"
        prompt = Text.assemble((f"{tool.name:<18}", "bold"), (f"{tool.risk:<8}", RISK_STYLES.get(tool.risk, "")),
                               (description, "dim"))
        return Selection(prompt, tool.name, tool.name in self.chosen)

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    @property
    def selected(self) -> list[str]:
        return list(self.query_one("#tool-list", SelectionList).selected)

    def action_keep(self) -> None:
        self.dismiss(sorted(self.selected))

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_all(self) -> None:
        options = self.query_one("#tool-list", SelectionList)
        if len(options.selected) == len(self.tools):
            options.deselect_all()
        else:
            options.select_all()

    @on(SelectionList.SelectedChanged)
    def _changed(self, event: SelectionList.SelectedChanged[str]) -> None:
        event.stop()
