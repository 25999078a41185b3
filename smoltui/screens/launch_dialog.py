"""The launch form: one field per workflow variable, defaults filled in, checked before the run starts.

Values are typed the way ``--var NAME=VALUE`` is on the command line (YAML: ``3`` is a number,
``[a, b]`` a list), and each must have the type of its default: a variable whose default is a number
will not start a run with ``"ten"``. Text variables take the field's text as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from smoltui.orchestrator.workflow_catalog import WorkflowEntry


@dataclass(frozen=True)
class LaunchRequest:
    """The form's answer: what to run, with which variables (only those that differ from defaults)."""

    entry: WorkflowEntry
    variables: dict[str, Any]


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", list: "a list like [a, b]",
               dict: "a mapping like {key: value}"}


def show_value(value: Any) -> str:
    """A default as the user would type it."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip().removesuffix(
        "\n...").strip()


def parse_field(raw: str, default: Any) -> Any:
    """The typed value of a field, or ValueError with a message naming what was expected."""
    if isinstance(default, str) or default is None:
        return raw
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"not valid YAML: {mark}") from None
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool) or not isinstance(value, expected) \
            or expected is int and isinstance(value, bool):
        raise ValueError(f"expects {_TYPE_NAMES.get(expected, expected.__name__)}, got {raw!r}")
    return value


class LaunchDialog(ModalScreen[LaunchRequest | None]):
    CSS_PATH = "launch_dialog.tcss"
    BINDINGS = [
        Binding("ctrl+s", "run", "Run", id="launch.run", priority=True),
        Binding("escape", "cancel", "Cancel", id="launch.cancel"),
    ]

    def __init__(self, entry: WorkflowEntry) -> None:
        # Not the shared "dialog" class: this form has its own stylesheet, and dialogs.tcss (loaded
        # once any other dialog has been open) would otherwise outrank it and reshape the form.
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        entry = self.entry
        with Vertical(classes="dialog-box"):
            yield Label(f"Run {entry.title}", classes="dialog-title", markup=False)
            if entry.description:
                yield Label(entry.description, classes="launch-description", markup=False)
            yield Label(str(entry.path), classes="launch-path", markup=False)
            with VerticalScroll(id="launch-fields"):
                if not entry.variables:
                    yield Label("This workflow has no variables.", classes="launch-none")
                for name, default in entry.variables.items():
                    with Horizontal(classes="launch-row"):
                        yield Label(name, classes="launch-name", markup=False)
                        yield Input(show_value(default), id=f"var-{name}", name=name, select_on_focus=False,
                                    compact=True)
                    yield Label("", id=f"err-{name}", classes="launch-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Run (ctrl+s)", variant="primary", id="run", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        inputs = list(self.query(Input))
        if inputs:
            inputs[0].focus()
        else:
            self.query_one("#run", Button).focus()

    def _collect(self) -> dict[str, Any] | None:
        values: dict[str, Any] = {}
        ok = True
        for field in self.query(Input):
            name = field.name or ""
            error = self.query_one(f"#err-{name}", Label)
            try:
                value = parse_field(field.value, self.entry.variables[name])
            except ValueError as problem:
                ok = False
                error.update(f"✗ {problem}")
                error.display = True
                field.add_class("-invalid")
                continue
            error.update("")
            error.display = False
            field.remove_class("-invalid")
            if value != self.entry.variables[name]:
                values[name] = value
        if not ok:
            first = next((f for f in self.query(Input) if f.has_class("-invalid")), None)
            if first is not None:
                first.focus()
        return values if ok else None

    @on(Input.Submitted)
    def _next_or_run(self, event: Input.Submitted) -> None:
        event.stop()
        fields = list(self.query(Input))
        index = fields.index(event.input)
        if index + 1 < len(fields):
            fields[index + 1].focus()
        else:
            self.action_run()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "run":
            self.action_run()
        else:
            self.action_cancel()

    def action_run(self) -> None:
        values = self._collect()
        if values is not None:
            self.dismiss(LaunchRequest(self.entry, values))

    def action_cancel(self) -> None:
        self.dismiss(None)
