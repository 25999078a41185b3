"""An approval is only ever given on purpose (issue 12, "Approvals only on purpose").

The real app over a real core (SQLite in tmp_path, the real gate, run manager and built-in tools),
driven by keys through Pilot; the model is the scripted backend. Each test names the guarantee it
shows:

- a card that appears while the user types takes none of the keys (a sentence full of ``y``);
- ctrl+g selects the call that has waited longest, the selected card names its place ("1 of 3"),
  and ``y`` answers exactly that call;
- a deny can carry a reason, and the model reads it;
- edited arguments are what the chat line, the run view's inputs, the audit trail and the export show;
- ctrl+q with runs in progress asks (stay keeps them), and so does ``c`` in the run view.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.widgets import Input, TextArea
from tui.harness import SIZE, build_app, build_core, ready, scripted, store_fixture, wait_until  # noqa: F401

from smoltui.app import SmolApp
from smoltui.backends.base import CancelToken, ChatMessage, GenerationParams, StreamEvent
from smoltui.backends.scripted import ScriptedBackend
from smoltui.config import Config
from smoltui.core import Core
from smoltui.orchestrator.approval import Policy
from smoltui.orchestrator.export import export_session
from smoltui.orchestrator.store import Store
from smoltui.screens.approval_card import ApprovalCard
from smoltui.screens.chat import ChatScreen
from smoltui.screens.dialogs import ConfirmDialog, QuitDialog, TextPromptDialog
from smoltui.screens.edit_arguments import EditArgumentsDialog
from smoltui.screens.run_view import RunScreen
from smoltui.screens.tool_call_view import ToolCallView
from smoltui.screens.tool_picker import ToolPickerDialog
from smoltui.tools.base import Tool, tool
from smoltui.tools.builtins import builtin_tools


def call(name: str, **arguments: object) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


class HeldBackend(ScriptedBackend):
    """A scripted model that writes nothing until the test releases it: the call it makes then
    appears at a moment the test chooses (between two key presses)."""

    def __init__(self, *replies: str) -> None:
        super().__init__(list(replies), delay_s=0.001)
        self.release = asyncio.Event()

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams,
                     cancel: CancelToken) -> AsyncIterator[StreamEvent]:
        await self.release.wait()
        async for event in super().stream(messages, params, cancel):
            yield event


def chat_app(store: Store, tmp_path: Path, backend: ScriptedBackend, tools: list[Tool] | None = None) -> SmolApp:
    """Writing asks (the default policy); files land in ``tmp_path``."""
    config = Config()
    config.approval = Policy()
    return build_app(store, backend, tmp_path, config=config, tools=tools or builtin_tools(), project_dir=tmp_path)


async def tools_on(pilot: Any, app: SmolApp, *names: str) -> ChatScreen:
    screen = await ready(pilot)
    await pilot.press("f5")
    await wait_until(pilot, lambda: isinstance(app.screen, ToolPickerDialog), "the tool picker")
    options = app.screen.query_one("#tool-list")
    for name in names:
        options.select(name)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.session_tools == sorted(names), "the tools to be on")
    return screen


async def send(pilot: Any, screen: ChatScreen, text: str) -> None:
    screen.prompt.load_text(text)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.replying and not screen.prompt.text, "the message to go")


def the_card(screen: ChatScreen) -> ApprovalCard | None:
    cards = [card for card in screen.query(ApprovalCard) if card.is_mounted]
    return cards[0] if cards else None


def text_of(card: ApprovalCard, selector: str) -> str:
    return str(card.query_one(selector).render())


# -- a card takes no keys meant for something else ------------------------------------------------


async def test_a_card_that_appears_while_the_user_types_takes_none_of_the_keys(store: Store, tmp_path: Path) -> None:
    backend = HeldBackend(call("write_file", path="typed.txt", content="approved by accident"), "Saved.")
    app = chat_app(store, tmp_path, backend)
    sentence = "yes yesterday you say yay"
    async with app.run_test(size=SIZE) as pilot:
        screen = await tools_on(pilot, app, "write_file")
        await send(pilot, screen, "Save a note to typed.txt")
        await pilot.press(*sentence[:4])  # "yes ": the model has not called anything yet
        assert the_card(screen) is None
        backend.release.set()
        await wait_until(pilot, lambda: the_card(screen) is not None, "the card to appear mid-sentence")
        card = the_card(screen)
        assert card is not None
        await pilot.press(*sentence[4:])  # "yesterday you say yay", as fast as Pilot types
        # Every key went to the message box: the call still waits, and nothing ran.
        assert screen.prompt.text == sentence
        assert screen.prompt.has_focus and not card.has_focus
        assert app.core.gate.is_waiting(card.call_id) and not card.settled
        assert not (tmp_path / "typed.txt").exists()
        assert not any(isinstance(s, EditArgumentsDialog | TextPromptDialog) for s in app.screen_stack)
        assert card in screen.focus_chain  # tab reaches it too
        # The card and the status bar say how to reach it.
        assert "selects this call" in text_of(card, ".legend")
        assert "1 waiting · ^g" in str(screen.status.query_one("#sb-approvals").render())
        # On purpose: ctrl+g selects it, y approves it; the sentence stays in the box.
        await pilot.press("ctrl+g")
        assert card.has_focus and text_of(card, ".position") == "1 of 1"
        assert text_of(card, ".legend").startswith("y approve")
        await pilot.press("y")
        await wait_until(pilot, lambda: not screen.replying, "the reply to finish")
        assert (tmp_path / "typed.txt").read_text() == "approved by accident"
        assert screen.prompt.text == sentence and screen.prompt.has_focus


# -- ctrl+g: the call that has waited longest, named by its place ------------------------------------

THREE = """\
workflow:
  id: three
  name: Three notes
  tasks:
{tasks}
"""


def three_notes(folder: Path) -> Path:
    tasks = "".join(f"    - id: note{n}\n      type: tool_call\n      tool: write_file\n"
                    f"      inputs: {{path: note{n}.txt, content: \"{n}\"}}\n" for n in (1, 2, 3))
    path = folder / "three.yaml"
    path.write_text(THREE.format(tasks=tasks))
    return path


COPY = """\
workflow:
  id: copy
  name: Copy a note
  tasks:
    - id: write
      type: tool_call
      tool: write_file
      inputs: {path: out.txt, content: "hello"}
"""


def workflow_app(store: Store, tmp_path: Path) -> tuple[SmolApp, Core, Path]:
    """Writes ask, everything else runs; workflows in ``tmp_path/workflows``."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "copy.yaml").write_text(COPY)
    three_notes(folder)
    config = Config()
    config.approval = Policy(defaults={"write": "ask", "execute": "auto"})
    core = build_core(store, scripted("ok"), tmp_path, config=config, project_dir=tmp_path)
    return build_app(store, None, tmp_path, core=core), core, folder


async def launch_copy(pilot: Any, core: Core, folder: Path) -> str:
    """A run of copy.yaml under way, its one call waiting for the user; its id."""
    await ready(pilot)
    run_id = await core.runs.launch(folder / "copy.yaml")
    await wait_until(pilot, lambda: core.gate.waiting(run_id=run_id), "the run's call to wait")
    return run_id


def focused_card(app: SmolApp) -> ApprovalCard | None:
    focused = app.focused
    return focused if isinstance(focused, ApprovalCard) else None


async def test_ctrl_g_selects_the_call_that_waited_longest_and_y_answers_exactly_it(
        store: Store, tmp_path: Path) -> None:
    app, core, folder = workflow_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot)
        run_id = await core.runs.launch(folder / "three.yaml")
        await wait_until(pilot, lambda: len(core.gate.waiting(run_id=run_id)) == 3, "three calls waiting")
        oldest, second, newest = (r.call for r in core.gate.waiting(run_id=run_id))
        await pilot.press("y")  # meant for the message box, and it gets there
        assert chat.prompt.text == "y" and len(core.gate.waiting(run_id=run_id)) == 3

        await pilot.press("ctrl+g")  # opens the run, on the card of the call that has waited longest
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and focused_card(app) is not None,
                         "the run view, its oldest card selected")
        view = app.screen
        assert isinstance(view, RunScreen) and len(view.cards) == 3
        card = focused_card(app)
        assert card is not None and card.call_id == oldest.id
        assert text_of(card, ".position") == "1 of 3"
        assert text_of(card, ".legend").startswith("y approve")
        others = [c for c in view.cards.values() if c is not card]
        assert all("selects this call" in text_of(c, ".legend") for c in others)
        assert {text_of(c, ".position") for c in others} == {"2 of 3", "3 of 3"}

        await pilot.press("ctrl+g")  # again: the next oldest
        assert focused_card(app) is view.cards[second.id] and text_of(view.cards[second.id], ".position") == "2 of 3"
        await pilot.press("ctrl+g", "ctrl+g")  # the newest, then round to the oldest again
        assert focused_card(app) is card

        await pilot.press("y")
        await wait_until(pilot, lambda: (folder / oldest.arguments["path"]).exists(), "the oldest call to run")
        assert [r.call.id for r in core.gate.waiting(run_id=run_id)] == [second.id, newest.id]
        for other in (second, newest):
            assert not (folder / other.arguments["path"]).exists()
        # Answered, the focus goes back to the table: a second "y" answers nothing.
        await wait_until(pilot, lambda: view.table.has_focus, "the table to have the focus back")
        await pilot.press("y")
        assert [r.call.id for r in core.gate.waiting(run_id=run_id)] == [second.id, newest.id]
        await wait_until(pilot, lambda: oldest.id not in view.cards, "the answered card to go")
        assert text_of(view.cards[second.id], ".position") == "1 of 2"
        assert text_of(view.cards[newest.id], ".position") == "2 of 2"
        # "a" moves to a card in the run view; pressed twice it moves on and approves nothing.
        await pilot.press("a", "a")
        assert focused_card(app) is view.cards[newest.id]
        assert len(core.gate.waiting(run_id=run_id)) == 2
        # A click selects a card too.
        clicked = view.cards[second.id]
        view.query_one("#detail-scroll").scroll_to_widget(clicked, animate=False, top=True)
        await pilot.pause()
        await pilot.click(clicked, offset=(2, 0))
        assert focused_card(app) is clicked
        await pilot.press("n")
        await wait_until(pilot, lambda: [r.call.id for r in core.gate.waiting(run_id=run_id)] == [newest.id],
                         "the clicked call to be denied")
        await core.runs.shutdown()


async def test_ctrl_g_brings_back_the_chat_whose_call_waits_with_its_card_selected(
        store: Store, tmp_path: Path) -> None:
    app = chat_app(store, tmp_path, scripted(call("write_file", path="later.txt", content="x"), "Saved."))
    async with app.run_test(size=SIZE) as pilot:
        screen = await tools_on(pilot, app, "write_file")
        await send(pilot, screen, "Save x to later.txt")
        await wait_until(pilot, lambda: the_card(screen) is not None, "the card")
        asking = screen.session_id
        await pilot.press("ctrl+n")  # the user moves on to a new chat; the call keeps waiting
        await wait_until(pilot, lambda: the_card(screen) is None and screen.session_id is None, "a new chat")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: screen.session_id == asking and focused_card(app) is not None,
                         "the chat that asks, its card selected")
        await pilot.press("y")
        await wait_until(pilot, lambda: (tmp_path / "later.txt").exists(), "the call to run")


# -- deny, and say why ---------------------------------------------------------------------------------


async def test_a_deny_can_say_why_and_the_model_reads_it(store: Store, tmp_path: Path) -> None:
    backend = scripted(call("write_file", path="secret.txt", content="x"), "Understood, I will not.")
    app = chat_app(store, tmp_path, backend)
    reason = "not in my home folder; ask me for a path first"
    async with app.run_test(size=SIZE) as pilot:
        screen = await tools_on(pilot, app, "write_file")
        await send(pilot, screen, "Save x to secret.txt")
        await wait_until(pilot, lambda: the_card(screen) is not None, "the card")
        card = the_card(screen)
        assert card is not None
        await pilot.click(card)  # a click selects it
        assert card.has_focus
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptDialog), "the reason dialog")
        await pilot.press("escape")  # changed my mind: the call still waits
        await wait_until(pilot, lambda: not isinstance(app.screen, TextPromptDialog), "the dialog to close")
        assert app.core.gate.is_waiting(card.call_id) and not card.settled
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptDialog), "the reason dialog")
        app.screen.query_one(Input).value = reason
        await pilot.press("enter")
        await wait_until(pilot, lambda: not screen.replying, "the reply to finish")
        assert not (tmp_path / "secret.txt").exists()
        # The model's next prompt holds the reason, in the tool result.
        tool_turns = [m.content for m in backend.prompts[-1] if reason in m.content]
        assert tool_turns and "denied by the user" in tool_turns[0]
        # So do the chat line and the audit trail.
        view = screen.query_one(ToolCallView)
        assert view.ok is False and reason in view.text
        [row] = await app.core.gate.audit.list(session_id=screen.session_id)
        assert (row.decision, row.decided_by) == ("deny", "user") and reason in (row.error or "")


# -- what ran is what is shown ---------------------------------------------------------------------


async def test_edited_arguments_are_shown_in_the_chat_line_the_audit_and_the_export(
        store: Store, tmp_path: Path) -> None:
    hold = asyncio.Event()

    @tool(risk="write")
    async def save_note(path: str, text: str) -> str:
        """Save a note.

        Args:
            path: Where.
            text: What.
        """
        await hold.wait()  # long enough to look at the chat line while it runs
        (tmp_path / path).write_text(text)
        return f"saved {path}"

    backend = scripted(call("save_note", path="model.txt", text="hi"), "Done.")
    app = chat_app(store, tmp_path, backend, tools=[save_note])
    async with app.run_test(size=SIZE) as pilot:
        screen = await tools_on(pilot, app, "save_note")
        await send(pilot, screen, "Save hi")
        await wait_until(pilot, lambda: the_card(screen) is not None, "the card")
        view = screen.query_one(ToolCallView)
        assert "model.txt" in view.text
        await pilot.press("ctrl+g", "e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditArgumentsDialog), "the edit dialog")
        app.screen.query_one(TextArea).load_text(json.dumps({"path": "mine.txt", "text": "hi"}))
        await pilot.press("ctrl+s")
        # While the edited call runs, its line already shows what runs.
        await wait_until(pilot, lambda: "mine.txt" in view.text, "the chat line to show the edited arguments")
        assert "model.txt" not in view.text and view.ok is None
        hold.set()
        await wait_until(pilot, lambda: not screen.replying, "the reply to finish")
        assert (tmp_path / "mine.txt").read_text() == "hi" and not (tmp_path / "model.txt").exists()
        assert "mine.txt" in view.text and "model.txt" not in view.text
        session_id = screen.session_id
        assert session_id is not None
        [row] = await app.core.gate.audit.list(session_id=session_id)
        assert row.arguments == {"path": "mine.txt", "text": "hi"}
        assert row.original_arguments == {"path": "model.txt", "text": "hi"}
        exported = (await export_session(store, session_id, tmp_path / "exports.md")).read_text()
        assert "mine.txt" in exported and "model.txt" not in exported
        # Reopened, the chat shows the arguments that ran.
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not screen.query(ToolCallView), "a new chat")
        screen.open_session(session_id)
        await wait_until(pilot, lambda: screen.query(ToolCallView), "the call in the history")
        again = screen.query_one(ToolCallView)
        assert "mine.txt" in again.text and "model.txt" not in again.text


def inputs_shown(view: RunScreen, task_id: str) -> str:
    """The run view's detail of a task, as text."""
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(view.describe_task(task_id))
    return console.export_text()


def written_only_as_the_workflows(shown: str, original: str) -> bool:
    """The original value appears once, on the line that says it is the workflow's, not what ran."""
    lines = [line for line in shown.splitlines() if original in line]
    return len(lines) == 1 and lines[0].strip().startswith("the workflow's:")


async def test_edited_arguments_are_the_run_views_inputs(store: Store, tmp_path: Path) -> None:
    app, core, folder = workflow_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        run_id = await launch_copy(pilot, core, folder)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: focused_card(app) is not None, "the card, selected")
        view = app.screen
        assert isinstance(view, RunScreen)
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditArgumentsDialog), "the edit dialog")
        app.screen.query_one(TextArea).load_text(json.dumps({"path": "edited.txt", "content": "hello"}))
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: view.loaded is not None and view.loaded.state == "succeeded", "the run")
        assert (folder / "edited.txt").read_text() == "hello" and not (folder / "out.txt").exists()
        shown = inputs_shown(view, "write")
        assert "edited before they ran" in shown and '"path": "edited.txt"' in shown
        assert written_only_as_the_workflows(shown, "out.txt")
        # Opened again later (from the store and the audit trail), it says the same.
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the main screen")
        again = RunScreen(core, run_id)
        await app.push_screen(again)
        await wait_until(pilot, lambda: again.loaded is not None and again.loaded.edited, "the run, from the store")
        shown = inputs_shown(again, "write")
        assert '"path": "edited.txt"' in shown and written_only_as_the_workflows(shown, "out.txt")


# -- cancelling runs asks first --------------------------------------------------------------------


async def test_ctrl_q_with_a_run_in_progress_asks_and_stay_keeps_it(store: Store, tmp_path: Path) -> None:
    app, core, folder = workflow_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        run_id = await launch_copy(pilot, core, folder)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitDialog), "the question")
        assert "1 run in progress" in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("ctrl+q")  # asked once, not twice
        assert sum(isinstance(s, QuitDialog) for s in app.screen_stack) == 1
        await pilot.press("n")  # stay
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen), "the main screen again")
        assert app.return_code is None and core.runs.is_running(run_id) and core.gate.waiting(run_id=run_id)
        await pilot.press("ctrl+q", "y")  # now quit: the run is cancelled, and recorded so
        await wait_until(pilot, lambda: app.return_code is not None, "the app to quit")
    assert not core.runs.is_running(run_id)
    assert (await core.run_store.get_run(run_id)).state == "cancelled"
    assert not (folder / "out.txt").exists()


async def test_ctrl_q_with_nothing_running_quits_at_once(store: Store, tmp_path: Path) -> None:
    app, core, folder = workflow_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app.return_code is not None, "the app to quit")
        assert not any(isinstance(s, QuitDialog) for s in app.screen_stack)


async def test_c_in_the_run_view_asks_before_cancelling(store: Store, tmp_path: Path) -> None:
    app, core, folder = workflow_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        run_id = await launch_copy(pilot, core, folder)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), "the run view")
        view = app.screen
        view.table.focus()
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("n")  # keep it running
        await wait_until(pilot, lambda: app.screen is view, "the run view again")
        assert core.runs.is_running(run_id) and core.gate.waiting(run_id=run_id)
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await wait_until(pilot, lambda: view.loaded is not None and view.loaded.state == "cancelled", "the cancel")
        assert not (folder / "out.txt").exists()
