"""The launch form: one field per workflow variable, defaults filled in, checked before the run starts.

Values are checked and typed exactly as ``--var NAME=VALUE`` is on the command line
(:func:`~smoltui.orchestrator.workflow_spec.coerce_value`): each must have the variable's declared
type, or else its default's; a variable whose default is a number will not start a run with
``"ten"``, and the field says so in the words the command line uses. Text variables take the
field's text as it is.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from smoltui.errors import SmoltuiError
from smoltui.orchestrator.workflow_catalog import WorkflowEntry
from smoltui.orchestrator.workflow_spec import coerce_value, load_workflow, show_value, type_of
from smoltui.screens.form_input import FormInput


@dataclass(frozen=True)
class LaunchRequest:
    """The form's answer: what to run, with which variables (only those that differ from defaults)."""

    entry: WorkflowEntry
    variables: dict[str, Any]


def parse_field(raw: str, default: Any, kind: str | None = None, name: str = "value") -> Any:
    """The typed value of a field, or ValueError with a message naming what was expected.

    ``kind``: the variable's declared type (default: its default's type; none: any value).
    """
    kind = kind or type_of(default)
    if looks_like_path(name, default):
        # A space at either end of a file name is a slip, never meant: it would fail the run later
        # with "no such file: notes.md " and only a double space as the clue.
        raw = raw.strip()
    if kind is None:
        return raw  # no type to check against: the text as typed
    return coerce_value(name, raw, kind)


_PATH_NAME = re.compile(r"(^|_)(file|path|dir|folder|directory|filename|out|output|input|target|source)s?$")


def looks_like_path(name: str, default: Any) -> bool:
    """A variable that holds a file or folder name: its name says so (``notes_file``, ``out_dir``,
    ``target``), or its default looks like one (``data/sales.csv``, ``report.md``)."""
    if _PATH_NAME.search(name.lower()):
        return True
    return isinstance(default, str) and bool(re.fullmatch(r"[\w./~-]*(/|\.[A-Za-z0-9]{1,5})", default.strip()))


__all__ = ["LaunchDialog", "LaunchRequest", "parse_field", "show_value"]


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
        self._declared: asyncio.Task[tuple[dict[str, str], frozenset[str]]] | None = None

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
                        yield FormInput(show_value(default), id=f"var-{name}", name=name, select_on_focus=False,
                                        compact=True)
                    yield Label("", id=f"err-{name}", classes="launch-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Run (ctrl+s)", variant="primary", id="run", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        # The variables' declared types (the catalog's entry only carries their defaults), read
        # off the event loop while the user looks at the form.
        self._declared = asyncio.create_task(asyncio.to_thread(_declared_types, self.entry))
        inputs = list(self.query(Input))
        if inputs:
            inputs[0].focus()
        else:
            self.query_one("#run", Button).focus()

    async def _collect(self) -> dict[str, Any] | None:
        types, required = await self._declared if self._declared is not None else ({}, frozenset())
        values: dict[str, Any] = {}
        ok = True
        for field in self.query(Input):
            name = field.name or ""
            error = self.query_one(f"#err-{name}", Label)
            try:
                if name in required and not field.value.strip():
                    raise ValueError(f"variable `{name}` needs a value ({types.get(name)})")
                value = parse_field(field.value, self.entry.variables[name], types.get(name), name)
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
    async def _next_or_run(self, event: Input.Submitted) -> None:
        event.stop()
        fields = list(self.query(Input))
        index = fields.index(event.input)
        if index + 1 < len(fields):
            fields[index + 1].focus()
        else:
            await self.action_run()

    @on(Button.Pressed)
    async def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "run":
            await self.action_run()
        else:
            self.action_cancel()

    async def action_run(self) -> None:
        values = await self._collect()
        if values is not None:
            self.dismiss(LaunchRequest(self.entry, values))

    def action_cancel(self) -> None:
        self.dismiss(None)


def _declared_types(entry: WorkflowEntry) -> tuple[dict[str, str], frozenset[str]]:
    """Each variable's type (declared, or its default's) and those that need a value."""
    try:
        spec = load_workflow(entry.path).spec
    except (SmoltuiError, OSError):  # changed on disk since the tree read it: the defaults' types
        return {}, frozenset()
    return ({name: kind for name in spec.variables if (kind := spec.variable_type(name))},
            spec.required_variables)
