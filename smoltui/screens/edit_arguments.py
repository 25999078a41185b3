"""Edit a pending tool call's arguments as JSON, checked against the tool's schema before they count.

Answers the edited arguments (a dict that ``validate_arguments`` accepts) or None when cancelled.
Bad JSON and arguments the schema refuses are shown in the dialog, which stays open.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, TextArea
from textual.widgets.text_area import LanguageDoesNotExist

from smoltui.tools.base import Tool
from smoltui.tools.registry import validate_arguments


def schema_summary(schema: Mapping[str, Any]) -> str:
    """One line about what the arguments look like: ``path: string (required) · limit: integer = 10``."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    parts = []
    for name, prop in properties.items():
        text = f"{name}: {_type_name(prop)}"
        if name in required:
            text += " (required)"
        elif isinstance(prop, Mapping) and "default" in prop:
            text += f" = {json.dumps(prop['default'], ensure_ascii=False, default=str)}"
        parts.append(text)
    if not parts:
        return "takes no arguments"
    return " · ".join(parts)


def _type_name(prop: Any) -> str:
    if not isinstance(prop, Mapping):
        return "any"
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if key in prop:
            names = [_type_name(option) for option in prop[key]]
            return " | ".join(dict.fromkeys(names))
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    kind = prop.get("type")
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    if kind == "array" and isinstance(prop.get("items"), Mapping):
        return f"array of {_type_name(prop['items'])}"
    return str(kind) if kind else "any"


def parse_arguments(tool: Tool, text: str) -> tuple[dict[str, Any] | None, str]:
    """(the arguments, "") when ``text`` is a JSON object the tool accepts, else (None, why not)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return None, f"not valid JSON: line {error.lineno}, column {error.colno}: {error.msg}"
    if not isinstance(value, dict):
        return None, f"the arguments must be a JSON object {{...}}, not {_json_kind(value)}"
    parsed, problem = validate_arguments(tool, value)
    if parsed is None:
        return None, problem
    return value, ""


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


class EditArgumentsDialog(ModalScreen[dict[str, Any] | None]):
    """The arguments of one call in a JSON editor; accept runs the call with them."""

    CSS_PATH = "edit_arguments.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "accept", "Accept", id="edit_args.accept"),
        Binding("escape", "cancel", "Cancel", id="edit_args.cancel"),
    ]

    def __init__(self, tool: Tool, arguments: Mapping[str, Any]) -> None:
        super().__init__()
        self.tool = tool
        self._text = json.dumps(dict(arguments), indent=2, ensure_ascii=False, default=str)
        try:
            self.editor = TextArea(self._text, language="json", id="arguments", show_line_numbers=True)
        except LanguageDoesNotExist:  # tree-sitter without its JSON grammar: edit as plain text
            self.editor = TextArea(self._text, id="arguments", show_line_numbers=True)
        self.problem = Label("", id="problem", markup=False)
        self._error = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="edit-box"):
            yield Label(f"Edit the arguments for {self.tool.name}", id="edit-title", markup=False)
            yield Label(schema_summary(self.tool.parameters), id="schema", markup=False)
            yield self.editor
            yield self.problem
            with Horizontal(id="edit-buttons"):
                yield Label("", id="edit-help", markup=False)
                yield Button("Accept", variant="primary", id="accept")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.problem.display = False
        keymap: Mapping[str, str] = getattr(self.app, "_keymap", {}) or {}

        def key(binding_id: str, default: str) -> str:
            first = keymap.get(binding_id, default).split(",")[0].strip()
            return self.app.get_key_display(Binding(first, ""))

        self.query_one("#edit-help", Label).update(
            f"{key('edit_args.accept', 'ctrl+s')} accept · {key('edit_args.cancel', 'escape')} cancel"
        )
        self.editor.focus()

    @property
    def error(self) -> str:
        """The message the dialog shows about the current text, if any."""
        return self._error

    def _refuse(self, message: str) -> None:
        self._error = message
        self.problem.update(message)
        self.problem.display = True

    def action_accept(self) -> None:
        arguments, problem = parse_arguments(self.tool, self.editor.text)
        if arguments is None:
            self._refuse(problem)
            if problem.startswith("not valid JSON: line "):
                self._point_at(problem)
            return
        self.dismiss(arguments)

    def _point_at(self, problem: str) -> None:
        """Put the cursor where the JSON went wrong."""
        try:
            where = problem.removeprefix("not valid JSON: line ").split(":", 1)[0]
            line, column = where.split(", column ")
            self.editor.move_cursor((int(line) - 1, int(column) - 1))
        except ValueError:
            pass

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#accept")
    def _accept_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_accept()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_cancel()
