"""The inline approval card and its edit dialog, answering a real ApprovalGate by keyboard.

A tiny host app does what the chat and the run view do: it mounts a card for each
``ApprovalNeeded`` on the gate's bus, passes the card's answer to ``gate.answer`` and settles a
card whose call the gate decided some other way. Each test drives ``gate.run`` as a task and checks
what the tool did, the result the model would get, the audit row and what the card shows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Footer, TextArea
from tui.harness import SIZE, wait_until

from smoltui.orchestrator.approval import ApprovalGate, ApprovalRequest, Decision, Policy, ToolCall
from smoltui.orchestrator.audit import AuditEntry, AuditLog
from smoltui.orchestrator.events import ApprovalNeeded, EventBus, ToolCallFinished
from smoltui.orchestrator.store import Store
from smoltui.screens.approval_card import (
    MAX_ARGUMENT_LINES,
    ApprovalCard,
    preview_arguments,
    preview_blocks,
    split_arguments,
    visible,
)
from smoltui.screens.edit_arguments import EditArgumentsDialog, schema_summary
from smoltui.screens.themes import bundled_theme_dirs, load_themes
from smoltui.tools.base import Tool, ToolContext, ToolResult, tool
from smoltui.tools.registry import ToolRegistry

SESSION = 3


class Host(App[None]):
    """Mounts a card per waiting call, answers the gate with what the card says."""

    class BusEvent(Message):
        def __init__(self, event: object) -> None:
            super().__init__()
            self.event = event

    def __init__(self, gate: ApprovalGate | None = None) -> None:
        super().__init__()
        self.gate = gate
        self.cards: dict[str, ApprovalCard] = {}
        self.answered: list[tuple[str, Decision]] = []
        self.bells = 0
        themes, _ = load_themes(bundled_theme_dirs())
        for theme in themes:
            self.register_theme(theme)
        self.theme = "smol-dusk"

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="log")
        yield Footer()

    def on_mount(self) -> None:
        if self.gate is not None and self.gate.bus is not None:
            self.gate.bus.subscribe(lambda event: self.post_message(self.BusEvent(event)))

    def bell(self) -> None:
        self.bells += 1

    async def show(self, request: ApprovalRequest, tool: Tool | None = None) -> ApprovalCard:
        """A card for ``request``, as the app makes one (``card_for``): it checks edits against the
        tool and asks the gate whether the call still waits."""
        gate, call_id = self.gate, request.call.id
        if gate is not None and tool is None:
            tool = gate.registry.get(request.call.tool)
        card = ApprovalCard(request, tool=tool, id=f"card-{call_id}",
                            waiting=None if gate is None else lambda: gate.is_waiting(call_id))
        self.cards[call_id] = card
        await self.query_one("#log").mount(card)
        card.focus()
        return card

    async def on_host_bus_event(self, message: BusEvent) -> None:
        event = message.event
        if isinstance(event, ApprovalNeeded):
            await self.show(event.request)
        elif isinstance(event, ToolCallFinished) and event.call.id in self.cards:
            if event.decided_by == "session":
                self.cards[event.call.id].settle("✓ allowed: you chose always earlier")
            elif event.decided_by == "timeout":
                self.cards[event.call.id].settle("✗ no answer in time")

    def on_approval_card_answered(self, message: ApprovalCard.Answered) -> None:
        assert message.card is not None and message.control is message.card
        self.answered.append((message.call_id, message.decision))
        assert self.gate is not None
        self.gate.answer(message.call_id, message.decision)


def note_tools(ran: list[tuple[str, dict[str, Any]]]) -> list[Tool]:
    """Two tools that say when they run: one that writes, one that executes."""

    @tool(risk="write")
    def write_note(text: str, times: int = 1) -> str:
        """Write a note into the notebook.

        Args:
            text: What to write.
            times: How many copies.
        """
        ran.append(("write_note", {"text": text, "times": times}))
        return "written"

    @tool(risk="execute")
    def shell(command: str) -> str:
        """Run a shell command."""
        ran.append(("shell", {"command": command}))
        return "done"

    return [write_note, shell]


def request_for(call: ToolCall, tool: Tool, asked_at: float | None = None) -> ApprovalRequest:
    """What the gate asks about ``call`` (for a card shown without the gate asking)."""
    description = (tool.description or "").strip().splitlines()[0]
    return ApprovalRequest(call, tool.risk_for(call.arguments), tool.origin, description,
                           time.time() if asked_at is None else asked_at)


class Harness:
    """A real gate (policy that asks for write/execute, audit in SQLite) over two tools."""

    def __init__(self, tmp_path: Path, store: Store) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []
        self.store = store
        self.audit = AuditLog(self.store)
        self.gate = ApprovalGate(ToolRegistry(note_tools(self.ran)), Policy(), audit=self.audit,
                                 bus=EventBus(), timeout_s=10)
        self.ctx = ToolContext(workspace=tmp_path, artifacts_dir=tmp_path / "artifacts", session_id=SESSION)
        self.tasks: list[asyncio.Task[ToolResult]] = []

    def run(self, name: str, **arguments: Any) -> tuple[ToolCall, asyncio.Task[ToolResult]]:
        call = ToolCall.new(name, arguments, session_id=SESSION)
        task = asyncio.create_task(self.gate.run(call, self.ctx))
        self.tasks.append(task)
        return call, task

    async def rows(self) -> list[AuditEntry]:
        return list(reversed(await self.audit.list()))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.store.close()


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, await Store.open(tmp_path / "smoltui.db"))
    yield harness
    await harness.close()


async def ask(pilot: Pilot, h: Harness, name: str, **arguments: Any) -> tuple[ApprovalCard, asyncio.Task[ToolResult]]:
    """Start a call that asks; returns its card (mounted and focused) and the gate's task."""
    host = pilot.app
    assert isinstance(host, Host)
    call, task = h.run(name, **arguments)
    await wait_until(pilot, lambda: call.id in host.cards and host.cards[call.id].is_mounted, "the card")
    await pilot.pause()
    return host.cards[call.id], task


async def finish(pilot: Pilot, task: asyncio.Task[ToolResult]) -> ToolResult:
    await wait_until(pilot, task.done, "the gate to finish the call")
    return task.result()


def text_of(card: ApprovalCard, selector: str) -> str:
    return str(card.query_one(selector).render())


def shown_keys(app: App[Any]) -> set[str]:
    return {b.binding.id for b in app.screen.active_bindings.values() if b.binding.id and b.binding.show}


# -- answering -------------------------------------------------------------------------------------


async def test_card_shows_the_call_and_approve_once_runs_it(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        card, task = await ask(pilot, h, "write_note", text="hello")
        host = pilot.app
        assert isinstance(host, Host)
        assert host.bells == 1
        assert text_of(card, ".tool") == "write_note"
        risk = card.query_one(".risk")
        assert str(risk.render()) == "write" and risk.has_class("-write")
        assert text_of(card, ".where") == "in the chat"
        assert text_of(card, ".description") == "Write a note into the notebook."
        assert '"text": "hello"' in text_of(card, ".arguments")
        assert text_of(card, ".legend") == ("y approve · A always · n deny · r deny, say why · D always deny · "
                                            "e edit")
        assert shown_keys(host) >= {"approval.once", "approval.always", "approval.deny", "approval.deny_reason",
                                    "approval.always_deny", "approval.edit"}

        await pilot.press("y")
        result = await finish(pilot, task)
        assert result.ok and result.content == "written"
        assert h.ran == [("write_note", {"text": "hello", "times": 1})]
        [row] = await h.rows()
        assert (row.tool, row.decision, row.decided_by, row.ok) == ("write_note", "once", "user", True)
        assert card.settled and card.has_class("-settled")
        assert text_of(card, ".outcome") == "✓ approved once"
        assert not card.query_one(".arguments").display and card.query_one(".summary").display

        # A settled card takes no keys and offers none in the footer.
        await pilot.press("y", "A", "n", "D", "e")
        assert len(host.answered) == 1
        assert not isinstance(host.screen, EditArgumentsDialog)
        assert not shown_keys(host) & {"approval.once", "approval.deny", "approval.edit"}
        assert len(await h.rows()) == 1


@pytest.mark.parametrize(
    ("key", "kind", "outcome"),
    [("y", "once", "✓ approved once"), ("n", "deny", "✗ denied"), ("d", "deny", "✗ denied")],
)
async def test_each_key_gives_its_decision(h: Harness, key: str, kind: str, outcome: str) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        card, task = await ask(pilot, h, "shell", command="rm -rf build")
        assert text_of(card, ".risk") == "execute" and card.query_one(".risk").has_class("-execute")
        await pilot.press(key)
        result = await finish(pilot, task)
        [row] = await h.rows()
        assert (row.decision, row.decided_by) == (kind, "user")
        assert text_of(card, ".outcome") == outcome
        if kind == "deny":
            assert not result.ok and result.error_kind == "denied" and h.ran == []
        else:
            assert result.ok and h.ran == [("shell", {"command": "rm -rf build"})]


async def test_always_allows_the_next_call_without_a_card(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        host = pilot.app
        assert isinstance(host, Host)
        card, task = await ask(pilot, h, "write_note", text="one")
        await pilot.press("A")  # shift+a arrives as the key "A"
        assert (await finish(pilot, task)).ok
        assert text_of(card, ".outcome") == "✓ always allowed"
        _, second = h.run("write_note", text="two")
        assert (await finish(pilot, second)).ok
        assert len(host.cards) == 1 and host.bells == 1
        assert [r[1]["text"] for r in h.ran] == ["one", "two"]
        assert [(r.decision, r.decided_by) for r in await h.rows()] == [("always", "user"), ("always", "session")]


async def test_always_deny_refuses_the_next_call_without_a_card(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        host = pilot.app
        assert isinstance(host, Host)
        card, task = await ask(pilot, h, "shell", command="ls")
        await pilot.press("D")
        first = await finish(pilot, task)
        assert not first.ok and first.error_kind == "denied"
        assert text_of(card, ".outcome") == "✗ always denied"
        _, second = h.run("shell", command="pwd")
        assert (await finish(pilot, second)).error_kind == "denied"
        assert len(host.cards) == 1 and h.ran == []
        assert [(r.decision, r.decided_by) for r in await h.rows()] == [("always_deny", "user"), ("deny", "session")]


async def test_always_on_one_card_settles_its_sibling(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        first, task_one = await ask(pilot, h, "write_note", text="one")
        second, task_two = await ask(pilot, h, "write_note", text="two")
        first.focus()
        await pilot.press("A")
        assert (await finish(pilot, task_one)).ok and (await finish(pilot, task_two)).ok
        await wait_until(pilot, lambda: second.settled, "the sibling card to settle")
        assert text_of(second, ".outcome") == "✓ allowed: you chose always earlier"
        # Keys on the sibling now do nothing.
        second.focus()
        await pilot.press("n")
        assert len(await h.rows()) == 2 and sorted(r.decided_by for r in await h.rows()) == ["session", "user"]


# -- editing ---------------------------------------------------------------------------------------


async def edit(pilot: Pilot, text: str) -> EditArgumentsDialog:
    dialog = pilot.app.screen
    assert isinstance(dialog, EditArgumentsDialog)
    dialog.editor.load_text(text)
    await pilot.pause()
    await pilot.press("ctrl+s")
    return dialog


async def test_edit_runs_with_the_edited_arguments(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        card, task = await ask(pilot, h, "write_note", text="original")
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, EditArgumentsDialog), "the edit dialog")
        dialog = pilot.app.screen
        assert isinstance(dialog, EditArgumentsDialog)
        assert dialog.editor.text == '{\n  "text": "original"\n}'
        assert pilot.app.focused is dialog.editor
        assert str(dialog.query_one("#schema").render()) == "text: string (required) · times: integer = 1"
        await edit(pilot, '{"text": "safer", "times": 2}')
        result = await finish(pilot, task)
        assert result.ok and h.ran == [("write_note", {"text": "safer", "times": 2})]
        [row] = await h.rows()
        assert (row.decision, row.decided_by) == ("edit", "user")
        assert row.arguments == {"text": "safer", "times": 2}
        assert row.original_arguments == {"text": "original"}
        assert not isinstance(pilot.app.screen, EditArgumentsDialog)
        assert text_of(card, ".outcome") == "✓ approved with edited arguments"
        assert text_of(card, ".summary") == '{"text": "safer", "times": 2}'


async def test_edit_keeps_the_dialog_open_until_the_arguments_are_valid(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        card, task = await ask(pilot, h, "write_note", text="original")
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, EditArgumentsDialog), "the edit dialog")

        dialog = await edit(pilot, '{\n  "text": "x",\n  "times": 2,,\n}')
        assert pilot.app.screen is dialog
        assert dialog.error.startswith("not valid JSON: line 3, column")
        assert dialog.problem.display and dialog.editor.cursor_location[0] == 2

        await edit(pilot, '["not", "an", "object"]')
        assert pilot.app.screen is dialog and "must be a JSON object" in dialog.error

        await edit(pilot, '{"text": "x", "times": "many"}')
        assert pilot.app.screen is dialog
        assert dialog.error.startswith("invalid arguments for write_note: times:")
        assert str(dialog.problem.render()) == dialog.error
        assert not task.done() and h.ran == [] and not card.settled

        await edit(pilot, '{"text": "fixed"}')
        result = await finish(pilot, task)
        assert result.ok and h.ran == [("write_note", {"text": "fixed", "times": 1})]
        assert (await h.rows())[0].original_arguments == {"text": "original"}


async def test_escape_cancels_the_edit_and_the_card_still_waits(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        card, task = await ask(pilot, h, "write_note", text="original")
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, EditArgumentsDialog), "the edit dialog")
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, EditArgumentsDialog)
        assert not card.settled and not task.done() and pilot.app.focused is card
        await pilot.press("n")
        assert (await finish(pilot, task)).error_kind == "denied"
        assert [(r.decision, r.arguments) for r in await h.rows()] == [("deny", {"text": "original"})]


# -- settled elsewhere -----------------------------------------------------------------------------


async def test_a_card_for_an_answered_call_says_so(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        host = pilot.app
        assert isinstance(host, Host)
        # Mounted after the answer (the gate no longer waits for it): nothing to approve.
        call = ToolCall.new("shell", {"command": "ls"}, session_id=SESSION)
        shell = h.gate.registry.get("shell")
        assert shell is not None
        assert not h.gate.is_waiting(call.id)
        late = await host.show(request_for(call, shell))
        await pilot.pause()
        assert late.settled and text_of(late, ".outcome") == "already answered" and host.bells == 0

        # Answered behind the card's back while it waits: the key finds the call answered.
        card, task = await ask(pilot, h, "shell", command="pwd")
        h.gate.answer(card.call_id, Decision("once"))
        await pilot.press("n")
        assert (await finish(pilot, task)).ok
        assert text_of(card, ".outcome") == "already answered"
        assert host.answered == []


async def test_settling_closes_an_open_edit_dialog(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        card, task = await ask(pilot, h, "write_note", text="x")
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, EditArgumentsDialog), "the edit dialog")
        task.cancel()  # the run was cancelled while the user was editing
        card.settle("✗ the run was cancelled")
        await wait_until(pilot, lambda: not isinstance(pilot.app.screen, EditArgumentsDialog), "the dialog to close")
        assert text_of(card, ".outcome") == "✗ the run was cancelled"
        card.settle("something else")  # the first outcome stays...
        assert card.outcome == "✗ the run was cancelled"
        card.settle("✗ too late", replace=True)  # ...unless the host says otherwise
        assert text_of(card, ".outcome") == "✗ too late"
        await wait_until(pilot, task.done, "the cancelled call to end")
        assert [(r.decision, r.decided_by) for r in await h.rows()] == [("deny", "cancelled")]


async def test_keymap_moves_the_keys_and_the_legend(h: Harness) -> None:
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        pilot.app.set_keymap({"approval.once": "o", "approval.always": "shift+o"})
        card, task = await ask(pilot, h, "write_note", text="k")
        assert text_of(card, ".legend").startswith("o approve · shift+o always · n deny")
        await pilot.press("y")  # no longer bound
        assert not task.done()
        await pilot.press("o")
        assert (await finish(pilot, task)).ok


# -- what the card and the dialog say --------------------------------------------------------------


def test_long_arguments_are_cut_on_the_card() -> None:
    text = "\n".join(f"line {i}" for i in range(30))
    shown, hint = preview_arguments(text)
    assert shown.splitlines() == [f"line {i}" for i in range(11)]
    assert hint == "… (19 more lines) — edit to see them in full"
    shown, hint = preview_arguments('{\n  "text": "' + "x" * 500 + '"\n}')
    assert len(shown.splitlines()[1]) == 200 and shown.splitlines()[1].endswith("…")
    assert hint == "long values shortened — edit to see them in full"
    assert preview_arguments('{\n  "a": 1\n}') == ('{\n  "a": 1\n}', "")


def test_schema_summary() -> None:
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "mode": {"enum": ["r", "w"], "default": "r"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        },
        "required": ["path"],
    }
    assert schema_summary(schema) == (
        'path: string (required) · mode: one of "r", "w" = "r" · tags: array of string · '
        "limit: integer | null = null"
    )
    assert schema_summary({"type": "object", "properties": {}}) == "takes no arguments"


# -- snapshot --------------------------------------------------------------------------------------


def test_card_snapshot(snap_compare) -> None:
    write_note = note_tools([])[0]
    arguments = {"text": "Remember to water the basil.\nTwice a week in summer.", "times": 3,
                 "tags": ["garden", "herbs", "summer", "watering", "reminders"],
                 "notes": {"where": "kitchen window", "light": "full sun", "soil": "moist",
                           "pot": "20 cm", "sown": "April"}}

    async def show_card(pilot: Pilot) -> None:
        host = pilot.app
        assert isinstance(host, Host)
        call = ToolCall("call-1", "write_note", arguments, session_id=None, run_id="r-20260426",
                        task_id="save_note")
        await host.show(request_for(call, write_note), write_note)  # no gate: it waits until answered
        await pilot.pause()

    assert snap_compare(Host(), terminal_size=SIZE, run_before=show_card)


async def test_multi_line_arguments_are_shown_as_text_not_json_escapes(h: Harness) -> None:
    command = "set -e\nprintf 'a\\tb\\r\\n' > out.txt\ncat out.txt\r\nrm out.txt"
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        card, task = await ask(pilot, h, "shell", command=command)
        shown = text_of(card, ".arguments")
        # Each line on its own, under a heading, with nothing JSON-escaped but what would not show.
        assert shown.splitlines() == [
            "command: 4 lines, bash",
            "set -e",
            "printf 'a\\tb\\r\\n' > out.txt",
            "cat out.txt\\r",
            "rm out.txt",
        ]
        assert "\\n" not in shown.replace("\\r\\n'", "")  # no line break written as an escape
        assert card.region.height <= 10  # compact: the card leaves most of 80x24 to the chat
        await pilot.press("y")
        assert (await finish(pilot, task)).ok
        assert h.ran == [("shell", {"command": command})]  # exactly what was shown ran


async def test_long_multi_line_arguments_keep_the_card_short(h: Harness) -> None:
    text = "\n".join(f"line {i}" for i in range(40))
    async with Host(h.gate).run_test(size=SIZE) as pilot:
        card, _ = await ask(pilot, h, "write_note", text=text, times=2)
        lines = text_of(card, ".arguments").splitlines()
        assert lines[:4] == ['{"times": 2}', "text: 40 lines", "line 0", "line 1"]
        assert len(lines) == MAX_ARGUMENT_LINES - 1
        assert text_of(card, ".hint") == "… (31 more lines) — edit to see them in full"
        assert card.region.height <= 18
        await pilot.press("e")  # the edit dialog has every line
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, EditArgumentsDialog), "the edit dialog")
        assert json.loads(pilot.app.screen.query_one(TextArea).text)["text"] == text


def test_blocks_and_their_languages() -> None:
    rest, blocks = split_arguments("python", {"code": "import os\nprint(1)\n", "timeout": 5, "note": "one line\n"})
    assert rest == {"timeout": 5, "note": "one line\n"}
    assert [(b.name, b.language) for b in blocks] == [("code", "python")]
    _, blocks = split_arguments("write_file", {"path": "report.md", "content": "# Report\n\n- done"})
    assert [(b.name, b.language) for b in blocks] == [("content", "markdown")]
    _, blocks = split_arguments("write_file", {"path": "notes", "content": "a\nb"})
    assert blocks[0].language == "text"
    assert visible("a\u200bb\x1b[0m") == "a\\u200bb\\u001b[0m"


def test_long_other_arguments_leave_room_for_the_blocks() -> None:
    many = {f"key{i}": i for i in range(30)}
    long_text = "\n".join(f"line {i}" for i in range(40))
    shown, hint = preview_blocks(*split_arguments("w", {**many, "first": "a\nb", "second": long_text}))
    assert [language for language, _ in shown] == ["json", "heading", "text", "heading", "text"]
    assert shown[1:4] == [("heading", "first: 2 lines"), ("text", "a\nb"), ("heading", "second: 40 lines")]
    assert sum(text.count("\n") + 1 for _, text in shown) == MAX_ARGUMENT_LINES - 1
    assert hint.startswith("… (") and hint.endswith("more lines) — edit to see them in full")
