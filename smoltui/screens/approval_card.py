"""A tool call waiting for the user, shown inline where it happens (the chat, or a run's view).

The card shows the tool, its risk, where the call comes from and its arguments, and takes the
answer by keyboard: approve once, always allow, deny (with a reason the model reads, or without),
always deny, or edit the arguments (in :class:`~smoltui.screens.edit_arguments.EditArgumentsDialog`,
validated before they are accepted).

An approval is only given on purpose: a card never takes the focus by itself (a card that appears
while the user types in the message box must not receive the next ``y``). The user moves to it with
``ctrl+g`` (the app's ``approvals.next``), a click or tab; only the focused card takes keys, and it
says so: it is drawn selected, its legend lists the keys, and its title names its place among the
calls waiting on that screen ("2 of 3", set by the host in :attr:`ApprovalCard.position`).

Messages up: the card never calls the gate. It posts :class:`ApprovalCard.Answered` and the host
passes the decision on with ``ApprovalGate.answer``. When the gate settles the call some other way
(timeout, a cancelled run, "always" given on a sibling card), the host calls :meth:`ApprovalCard.settle`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pygments.lexers import get_lexer_for_filename
from pygments.util import ClassNotFound
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.highlight import (
    ANSIDarkHighlightTheme,
    ANSILightHighlightTheme,
    HighlightTheme,
    highlight,
)
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Label, Static

from smoltui.screens.dialogs import TextPromptDialog
from smoltui.screens.edit_arguments import EditArgumentsDialog
from smoltui.tools.base import Tool
from smoltui.tools.calls import ApprovalRequest, Decision

if TYPE_CHECKING:
    from smoltui.core import Core

MAX_ARGUMENT_LINES = 12
"""Lines of arguments shown on the card; the rest is a hint (the edit dialog has them all)."""
MAX_LINE_CHARS = 200
"""A longer line (a long string value) is cut with an ellipsis on the card."""
BLOCK_MIN_LINES = 3
"""Lines of each multi-line argument the card shows however long the other arguments are."""

OUTCOMES: dict[str, str] = {
    "once": "✓ approved once",
    "always": "✓ always allowed",
    "deny": "✗ denied",
    "always_deny": "✗ always denied",
    "edit": "✓ approved with edited arguments",
}
ALREADY_ANSWERED = "already answered"

_ANSWER_ACTIONS = frozenset({"approve", "always", "deny", "deny_with_reason", "always_deny", "edit"})
_LEGEND = (
    ("approval.once", "approve"),
    ("approval.always", "always"),
    ("approval.deny", "deny"),
    ("approval.deny_reason", "deny, say why"),
    ("approval.always_deny", "always deny"),
    ("approval.edit", "edit"),
)
SELECT_KEY = ("approvals.next", "ctrl+g")
"""The app's binding that moves to the call that has waited longest (named on an unselected card)."""


def pretty_arguments(arguments: Mapping[str, Any]) -> str:
    """The arguments as indented JSON, the way the card and the edit dialog show them."""
    return json.dumps(dict(arguments), indent=2, ensure_ascii=False, default=str)


def preview_arguments(
    text: str, *, max_lines: int = MAX_ARGUMENT_LINES, max_chars: int = MAX_LINE_CHARS
) -> tuple[str, str]:
    """(what the card shows, a hint about what it left out, or "")."""
    lines = text.splitlines()
    cut = any(len(line) > max_chars for line in lines[:max_lines])
    shown = [line if len(line) <= max_chars else line[: max_chars - 1] + "…" for line in lines]
    hints = []
    if len(shown) > max_lines:
        shown = shown[: max_lines - 1]
        hidden = len(lines) - len(shown)
        hints.append(f"… ({hidden} more lines)")
    if cut:
        hints.append("long values shortened")
    hint = ", ".join(hints) + " — edit to see them in full" if hints else ""
    return "\n".join(shown), hint


@dataclass(frozen=True)
class ArgumentBlock:
    """A multi-line string argument, shown as its own block of text instead of a JSON string."""

    name: str
    text: str
    language: str


_CODE_LANGUAGES = {"code": "python", "query": "sql", "sql": "sql", "command": "bash", "script": "bash"}
"""Languages of code arguments by name, used when the tool's name says nothing better."""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
"""Characters a block would hide (a carriage return, an escape, zero-width and bidi marks)."""


def is_block(value: Any) -> bool:
    """A string with a line break inside it (a trailing one alone does not make a block)."""
    return isinstance(value, str) and "\n" in value.rstrip("\n")


def block_language(tool: str, name: str, arguments: Mapping[str, Any]) -> str:
    """The language to highlight argument ``name`` of a call to ``tool`` in ("text" when unknown)."""
    if name == "code" and tool in ("python", "sql", "shell", "bash"):
        return tool
    if name in _CODE_LANGUAGES:
        return _CODE_LANGUAGES[name]
    path = next((arguments[key] for key in ("path", "file", "filename") if isinstance(arguments.get(key), str)), None)
    if path and os.path.splitext(path)[1]:
        # By the file's name only: guessing from the text alone is wrong too often to help.
        try:
            lexer = get_lexer_for_filename(path)
        except ClassNotFound:
            return "text"
        return lexer.aliases[0] if lexer.aliases else "text"
    return "text"


def split_arguments(tool: str, arguments: Mapping[str, Any]) -> tuple[dict[str, Any], list[ArgumentBlock]]:
    """(the arguments shown as JSON, the multi-line strings shown as blocks after it)."""
    rest = {name: value for name, value in arguments.items() if not is_block(value)}
    blocks = [ArgumentBlock(name, value, block_language(tool, name, arguments))
              for name, value in arguments.items() if is_block(value)]
    return rest, blocks


def visible(text: str) -> str:
    """``text`` with the characters a terminal would not show written as escapes (``\\r``, ``\\u200b``)."""
    return _CONTROL.sub(lambda m: json.dumps(m.group(0))[1:-1], text)


def preview_blocks(
    rest: Mapping[str, Any], blocks: list[ArgumentBlock], *, max_lines: int = MAX_ARGUMENT_LINES,
    max_chars: int = MAX_LINE_CHARS,
) -> tuple[list[tuple[str, str]], str]:
    """What the card shows, as (language, text) pieces, and a hint about what it left out ("" if nothing).

    The JSON of the other arguments comes first, then each block under a ``name:`` heading line
    (language "heading"); all of it shares ``max_lines``.
    """
    pieces: list[tuple[str, list[str]]] = []
    if rest or not blocks:
        compact = json.dumps(dict(rest), ensure_ascii=False, default=str)
        # Beside blocks, short other arguments (a path) take one line, not one per key.
        text = compact if blocks and len(compact) <= max_chars // 3 else pretty_arguments(rest)
        pieces.append(("json", text.splitlines()))
    for block in blocks:
        lines = visible(block.text).rstrip("\n").split("\n")
        count = len(lines)
        pieces.append(("heading", [f"{block.name}: {count} lines" + (f", {block.language}" if block.language != "text" else "")]))
        pieces.append((block.language, lines))
    total = sum(len(lines) for _, lines in pieces)
    budget = max_lines if total <= max_lines else max_lines - 1
    # Each block gets a few lines however long what comes before it: the JSON and the first
    # block leave room for the headings and first lines of the blocks after them.
    floors = [1 if language == "heading" else min(len(lines), BLOCK_MIN_LINES) for language, lines in pieces]
    shown: list[tuple[str, str]] = []
    cut = False
    for index, (language, lines) in enumerate(pieces):
        if budget <= 0:
            break
        room = max(min(floors[index], budget), budget - sum(floors[index + 1:]))
        kept = lines[:room]
        budget -= len(kept)
        cut = cut or any(len(line) > max_chars for line in kept)
        kept = [line if len(line) <= max_chars else line[: max_chars - 1] + "…" for line in kept]
        if language == "heading" and budget == 0:
            break  # a heading with none of its lines says nothing the hint does not
        shown.append((language, "\n".join(kept)))
    hints = []
    if total > max_lines:
        hidden = total - sum(text.count("\n") + 1 for _, text in shown)
        hints.append(f"… ({hidden} more lines)")
    if cut:
        hints.append("long values shortened")
    hint = ", ".join(hints) + " — edit to see them in full" if hints else ""
    return shown, hint


def one_line(arguments: Mapping[str, Any], limit: int = 160) -> str:
    text = json.dumps(dict(arguments), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ApprovalCard(Widget, can_focus=True):
    """One pending tool call and the keys that answer it."""

    DEFAULT_CSS = """
    ApprovalCard {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
        border-left: outer $warning;
        background: $warning 8%;
        &:focus {
            border-left: thick $accent;
            background-tint: $foreground 6%;
            & .position {
                color: $text-accent;
                text-style: bold reverse;
            }
        }
        &.-settled {
            border-left: outer $panel;
            background: transparent;
        }
        & > .title {
            height: 1;
            width: 1fr;
        }
        & .position {
            margin-right: 1;
            color: $text-muted;
            &.-none { display: none; }
        }
        & .tool {
            text-style: bold;
        }
        & .risk {
            margin: 0 1;
            padding: 0 1;
            text-style: bold;
            &.-read { color: $text-success; background: $success-muted; }
            &.-write { color: $text-warning; background: $warning-muted; }
            &.-execute { color: $text-error; background: $error-muted; }
            &.-network { color: $text-accent; background: $accent-muted; }
        }
        & .origin {
            color: $text-secondary;
            margin-right: 1;
        }
        & .where {
            color: $text-muted;
        }
        & > .description {
            width: 1fr;
            color: $text-muted;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        & > .arguments {
            width: 1fr;
            padding: 0 1;
            background: $background 40%;
        }
        & > .hint, & > .legend, & > .summary {
            width: 1fr;
            color: $text-muted;
        }
        & > .hint {
            text-style: italic;
            &.-empty { display: none; }
        }
        & > .summary {
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        & > .summary, & > .outcome {
            display: none;
        }
        & > .outcome {
            text-style: bold;
            color: $text-muted;
            &.-allowed { color: $text-success; }
            &.-refused { color: $text-error; }
        }
        &.-settled {
            & .position { display: none; }
            & > .description, & > .arguments, & > .hint, & > .legend {
                display: none;
            }
            & > .summary, & > .outcome {
                display: block;
            }
        }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        # Not "a": the run view's "a" moves to a card, and pressing it twice must not approve.
        Binding("y", "approve", "Approve", id="approval.once"),
        Binding("A", "always", "Always allow", id="approval.always"),
        Binding("n,d", "deny", "Deny", id="approval.deny"),
        Binding("r", "deny_with_reason", "Deny, say why", id="approval.deny_reason"),
        Binding("D", "always_deny", "Always deny", id="approval.always_deny"),
        Binding("e", "edit", "Edit", id="approval.edit"),
    ]

    outcome: reactive[str] = reactive("", init=False)
    """What became of the call ("" while it waits); a settled card takes no more keys."""

    position: reactive[tuple[int, int] | None] = reactive(None, init=False)
    """(n, of) among the calls waiting on the host's screen, oldest first; None: not shown."""

    class Answered(Message):
        """The user answered the card; the host hands ``decision`` to ``ApprovalGate.answer``."""

        def __init__(self, call_id: str, decision: Decision, *, card: ApprovalCard | None = None) -> None:
            super().__init__()
            self.call_id = call_id
            self.decision = decision
            self.card = card

        @property
        def control(self) -> ApprovalCard | None:
            return self.card

    def __init__(
        self,
        request: ApprovalRequest,
        *,
        tool: Tool | None = None,
        waiting: Callable[[], bool] | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002  (Textual's name for it)
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.request = request
        self.tool = tool
        """The tool, for checking edited arguments (None: editing is not offered)."""
        self._waiting = waiting or (lambda: True)
        self.arguments: dict[str, Any] = dict(request.call.arguments)
        """The arguments the call will run with (the edited ones after an edit)."""
        self._dialog: ModalScreen[Any] | None = None
        """The edit or deny-with-reason dialog open for this card, if any."""
        self._highlighted_with: type[HighlightTheme] = HighlightTheme
        rest, blocks = split_arguments(request.call.tool, self.arguments)
        self._pieces, hint = preview_blocks(rest, blocks)
        self._arguments_view = Static(self._highlighted(), classes="arguments", markup=False)
        self._hint = Label(hint, classes="hint" if hint else "hint -empty", markup=False)
        self._legend = Label(classes="legend")
        self._position = Label(classes="position -none", markup=False)
        self._summary = Label(one_line(self.arguments), classes="summary", markup=False)
        self._outcome = Label(classes="outcome", markup=False)
        self._description = request.description

    @property
    def call_id(self) -> str:
        return self.request.call.id

    @property
    def settled(self) -> bool:
        return bool(self.outcome)

    def compose(self) -> ComposeResult:
        request = self.request
        with Horizontal(classes="title"):
            yield self._position
            yield Label(request.call.tool, classes="tool", markup=False)
            yield Label(request.risk, classes=f"risk -{request.risk}", markup=False)
            if request.origin and request.origin != "builtin":
                yield Label(request.origin, classes="origin", markup=False)
            yield Label(request.where, classes="where", markup=False)
        if self._description:
            yield Label(self._description, classes="description", markup=False)
        yield self._arguments_view
        yield self._hint
        yield self._legend
        yield self._summary
        yield self._outcome

    def on_mount(self) -> None:
        self._legend.update(self._legend_text())
        if not self._waiting():
            self.settle(ALREADY_ANSWERED)
        else:
            self.app.bell()

    # -- what the host calls -----------------------------------------------------------------------

    def settle(self, text: str, *, replace: bool = False) -> None:
        """Show the call as decided elsewhere (timeout, cancelled run, a sibling's "always").

        The first outcome stays (settling a settled card changes nothing) unless ``replace``: for a
        host whose ``gate.answer`` came too late for the card's answer to count.
        """
        if self.settled and not replace:
            return
        self.outcome = text or ALREADY_ANSWERED

    def watch_position(self, position: tuple[int, int] | None) -> None:
        self._position.update(f"{position[0]} of {position[1]}" if position else "")
        self._position.set_class(position is None, "-none")

    def watch_outcome(self, outcome: str) -> None:
        self.set_class(bool(outcome), "-settled")
        self._outcome.update(outcome)
        self._outcome.set_class(outcome.startswith("✓"), "-allowed")
        self._outcome.set_class(outcome.startswith("✗"), "-refused")
        self._summary.update(one_line(self.arguments))
        if outcome and self._dialog is not None and self._dialog.is_current:
            self._dialog.dismiss(None)  # the question is gone; so is the dialog that answers it
        self.refresh_bindings()

    # -- keys ----------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in _ANSWER_ACTIONS and self.settled)

    # Handlers of a subclass run before Widget's, which sets has_focus: the state is passed in.
    def on_focus(self) -> None:
        self._legend.update(self._legend_text(selected=True))

    def on_blur(self) -> None:
        self._legend.update(self._legend_text(selected=False))

    def action_approve(self) -> None:
        self._answer(Decision("once"))

    def action_always(self) -> None:
        self._answer(Decision("always"))

    def action_deny(self) -> None:
        self._answer(Decision("deny"))

    def action_deny_with_reason(self) -> None:
        if not self._may_open_dialog():
            return
        self._dialog = TextPromptDialog(
            f"Deny {self.request.call.tool}: why? The model reads your reason.",
            placeholder="e.g. not in my home folder; use the workspace",
            help_text="enter denies with this reason · esc goes back (the call still waits)",
        )
        self.app.push_screen(self._dialog, callback=self._denied_with_reason)

    def _denied_with_reason(self, reason: str | None) -> None:
        self._dialog = None
        if reason is not None:
            self._answer(Decision("deny", reason=reason))

    def action_always_deny(self) -> None:
        self._answer(Decision("always_deny"))

    def _may_open_dialog(self) -> bool:
        """Whether an answer that needs a dialog can start (one dialog at a time, for a live call)."""
        if self.settled or self._dialog is not None:
            return False
        if not self._waiting():
            self.settle(ALREADY_ANSWERED)
            return False
        return True

    def action_edit(self) -> None:
        if not self._may_open_dialog():
            return
        if self.tool is None:
            self.notify(f"{self.request.call.tool} cannot be edited here", severity="warning")
            return
        self._dialog = EditArgumentsDialog(self.tool, self.arguments)
        self.app.push_screen(self._dialog, callback=self._edited)

    def _edited(self, arguments: dict[str, Any] | None) -> None:
        self._dialog = None
        if arguments is not None:
            self._answer(Decision("edit", arguments=dict(arguments)))

    def _answer(self, decision: Decision) -> None:
        if self.settled:
            return
        if not self._waiting():
            self.settle(ALREADY_ANSWERED)
            return
        if decision.kind == "edit" and decision.arguments is not None:
            self.arguments = dict(decision.arguments)
        self.post_message(self.Answered(self.call_id, decision, card=self))
        reason = (decision.reason or "").strip() if decision.kind == "deny" else ""
        self.outcome = OUTCOMES[decision.kind] + (f": {reason}" if reason else "")

    # -- rendering -----------------------------------------------------------------------------------

    def _highlight_theme(self) -> type[HighlightTheme]:
        """The app's colours ($text-success, ...) or, on a terminal's own palette, its ANSI colours."""
        if not self.is_attached or not self.app.native_ansi_color:
            return HighlightTheme
        return ANSIDarkHighlightTheme if self.app.current_theme.dark else ANSILightHighlightTheme

    def _highlighted(self) -> Content:
        self._highlighted_with = self._highlight_theme()
        theme = self._highlighted_with
        parts: list[Content] = []
        for language, text in self._pieces:
            if language == "heading":
                parts.append(Content.styled(text, "bold $text-secondary"))
            else:
                parts.append(highlight(text, language=language, theme=theme))
        return Content("\n").join(parts)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.is_attached and self._highlight_theme() is not self._highlighted_with:
            self._arguments_view.update(self._highlighted())

    def _legend_text(self, *, selected: bool | None = None) -> Content:
        keymap: Mapping[str, str] = getattr(self.app, "_keymap", {}) or {}
        if not (self.has_focus if selected is None else selected):
            # Keys reach only the selected card: an unselected one says how to select it.
            binding_id, default = SELECT_KEY
            key = keymap.get(binding_id, default).split(",")[0].strip()
            return Content.assemble((self.app.get_key_display(Binding(key, "")), "bold $text-accent"),
                                    " (or a click) selects this call to answer it")
        keys = {b.id: b.key for b in self.BINDINGS if isinstance(b, Binding) and b.id}
        parts: list[str | tuple[str, str]] = []
        for binding_id, label in _LEGEND:
            key = keymap.get(binding_id, keys.get(binding_id, "")).split(",")[0].strip()
            if parts:
                parts.append(" · ")
            parts.append((self.app.get_key_display(Binding(key, "")), "bold $text-accent"))
            parts.append(f" {label}")
        return Content.assemble(*parts)


def card_for(core: Core, request: ApprovalRequest) -> ApprovalCard:
    """A card for a call waiting in ``core``'s gate, which can check edits against the call's tool."""
    call_id = request.call.id
    return ApprovalCard(request, tool=core.tools.get(request.call.tool), waiting=lambda: core.gate.is_waiting(call_id))
