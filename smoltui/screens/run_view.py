"""The run view: one run's tasks with live state, the selected task's inputs, output and error,
its tool calls waiting for approval, and the run's log.

Everything shown comes from the store (the scheduler writes before it publishes), so the view
also follows a run driven by another smoltui process: the core's watcher announces those changes on
the bus, as the scheduler announces this process's own. A one-second tick only keeps the durations
of what still runs moving; it reads nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Label, Static

from smoltui.core import Core
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.audit import AuditEntry
from smoltui.orchestrator.events import (
    ApprovalNeeded,
    RunFinished,
    RunsChanged,
    RunStateChanged,
    TaskStateChanged,
    TaskToken,
    ToolCallFinished,
)
from smoltui.orchestrator.run_manager import run_state_now
from smoltui.orchestrator.run_store import RunRecord, TaskRecord
from smoltui.orchestrator.states import TASK_STATES, RunState, TaskState
from smoltui.orchestrator.workflow_spec import Task, WorkflowError, load_workflow
from smoltui.run_outputs import json_view, output_view
from smoltui.screens.approval_card import ApprovalCard, card_for, one_line
from smoltui.screens.dialogs import ConfirmDialog
from smoltui.screens.log_pane import LogPane
from smoltui.screens.preview import Previewable, PreviewScreen, key_hint, open_item, previewable
from smoltui.screens.state_icons import STATE_STYLES
from smoltui.screens.throttle import REPAINTS_PER_SECOND
from smoltui.screens.workflow_tree import RUN_ICONS, duration_text
from smoltui.tools.calls import ApprovalRequest

log = logging.getLogger(__name__)

TASK_ICONS = STATE_STYLES
clock: Callable[[], float] = time.time
"""Now, for durations of what still runs (tests fix it to take steady snapshots)."""
AWAITING = "awaiting approval"
"""Not a stored state: a running task whose tool call waits for the user."""
SHORT_STATES = {AWAITING: "approve?", TaskState.UPSTREAM_FAILED: "upstream✗"}
"""State names that would widen the task table past what fits beside the detail at 80 columns."""
LIVE_TEXT_LIMIT = 20_000
"""Characters of a running LLM task's streamed reply kept on screen."""


@dataclass(frozen=True)
class _Loaded:
    record: RunRecord
    state: RunState
    tasks: dict[str, TaskRecord]
    edited: dict[str, tuple[Any, Any]]
    """task id -> (the arguments its call ran with, the workflow's), for a call a person edited in
    the task's current attempt (from the audit trail)."""


class RunScreen(Screen[None]):
    CSS_PATH = "run_view.tcss"
    AUTO_FOCUS = "#tasks"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    BINDINGS = [
        Binding("escape", "back", "Back", id="run.back"),
        Binding("c", "cancel_run", "Cancel run", id="run.cancel"),
        Binding("r", "retry_task", "Retry task", id="run.retry"),
        Binding("u", "resume_run", "Resume", id="run.resume"),
        Binding("a", "next_approval", "Approval", id="run.approval"),
        Binding("R", "rerun", "Rerun", id="run.rerun"),
        Binding("D", "delete_run", "Delete", id="run.delete", show=False),
        Binding("f4", "toggle_logs", "Log", id="run.logs"),
        Binding("o", "preview_output", "Preview", id="run.preview"),
        Binding("O", "open_output", "Open", id="run.open"),
    ]

    class BusEvent(Message):
        def __init__(self, event: Any) -> None:
            super().__init__()
            self.event = event

    def __init__(self, core: Core, run_id: str, *, focus_call: str | None = None) -> None:
        """``focus_call``: a waiting call whose card takes the focus once shown (the user asked for
        it with ctrl+g); no other card ever takes it by itself."""
        super().__init__()
        self.core = core
        self.run_id = run_id
        self._focus_call = focus_call
        self.loaded: _Loaded | None = None
        self.tasks: list[Task] = []
        self.spec_problem: str | None = None
        self.selected: str | None = None
        self.live_text: dict[str, str] = {}
        self.live_tokens: dict[str, tuple[int, float]] = {}
        """task id -> (tokens streamed so far, when the first came): a running LLM task's pace."""
        self._detail_due: Timer | None = None
        self.cards: dict[str, ApprovalCard] = {}
        self._answered_edits: dict[str, tuple[Any, Any]] = {}
        """task id -> (edited, original) arguments answered here, until the audit trail has them."""
        self._shown_outputs: dict[tuple[str, int, float | None], RenderableType] = {}
        self._outputs_read: dict[tuple[str, int, float | None], dict[str, Any] | str] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self.title_label = Label(id="run-title", markup=False)
        self.table: DataTable[Any] = DataTable(id="tasks", cursor_type="row", zebra_stripes=False)
        self.approvals = Vertical(id="approvals")
        self.detail = Static(id="task-detail", markup=False)
        self.live_view = Static(id="task-live", markup=False)
        """The reply of the selected LLM task as it streams: redrawn alone, not with the whole detail."""
        self.log_pane = LogPane(core.run_store, id="run-log")

    # -- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self.title_label
        with Horizontal(id="run-main"):
            yield self.table
            with VerticalScroll(id="detail-scroll"):
                yield self.approvals
                yield self.detail
                yield self.live_view
        yield self.log_pane
        yield Footer()

    def on_mount(self) -> None:
        self.table.add_column("", key="icon", width=1)
        self.table.add_column("task", key="task")
        self.table.add_column("state", key="state")
        self.table.add_column("time", key="time")
        self.log_pane.run_id = self.run_id
        self._unsubscribe = self.core.bus.subscribe(lambda e: self.post_message(self.BusEvent(e)))
        for pending in self.core.gate.waiting(run_id=self.run_id):
            self._add_card(pending)
        if self._focus_call is not None:
            self.call_after_refresh(self.focus_card, self._focus_call)
        self._load_spec()
        self.reload()
        # Only the clock: the store is read again when the bus says this run changed.
        self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- data ------------------------------------------------------------------------------------

    @work(group="run-spec")
    async def _load_spec(self) -> None:
        record = await self.core.run_store.find_run(self.run_id)
        if record is None or not record.file:
            return
        try:
            workflow = await asyncio.to_thread(load_workflow, record.file)
        except WorkflowError as error:
            self.spec_problem = str(error)
            return
        self._set_tasks(list(workflow.spec.tasks))

    def _set_tasks(self, tasks: list[Task]) -> None:
        self.tasks = tasks
        self._render_table()

    def reload(self) -> None:
        self._reload()

    @work(exclusive=True, group="run-reload")
    async def _reload(self) -> None:
        store = self.core.run_store
        try:
            record = await store.get_run(self.run_id)
            tasks = await store.task_records(self.run_id)
            for task_id, task in tasks.items():
                key = (task_id, task.attempt, task.finished_at)
                if task.state == TaskState.SUCCEEDED and task.outputs and key not in self._outputs_read:
                    self._outputs_read[key] = await self._read_outputs(task_id)
            edited = edited_calls(await self.core.gate.audit.list(run_id=self.run_id), tasks)
        except SmoltuiError as error:
            self.notify(str(error), severity="error")
            return
        self._show(_Loaded(record, run_state_now(record), tasks, edited))

    async def _read_outputs(self, task_id: str) -> dict[str, Any] | str:
        try:
            return await self.core.run_store.task_outputs(self.run_id, task_id)
        except Exception as error:  # an artifact deleted by hand, or pandas missing
            return f"the outputs cannot be read back: {error}"

    def _tick(self) -> None:
        """Running tasks' durations move on; nothing is read."""
        if self.loaded is not None and self.loaded.state.active:
            self._render_title()
            self._render_table()

    def _show(self, loaded: _Loaded) -> None:
        self.loaded = loaded
        # A call can end without an answer (its task timed out, the run was cancelled).
        for call_id in [c for c in self.cards if not self.core.gate.is_waiting(c)]:
            self._drop_card(call_id)
        self._render_title()
        self._render_table()
        self._render_detail()
        self.refresh_bindings()

    # -- rendering -------------------------------------------------------------------------------

    def task_state(self, task_id: str) -> str:
        """What the table shows: the stored state, or "awaiting approval" while a call waits."""
        if any(p.call.task_id == task_id for p in self.core.gate.waiting(run_id=self.run_id)):
            return AWAITING
        record = self.loaded.tasks.get(task_id) if self.loaded else None
        return record.state if record else TaskState.PENDING

    def _render_title(self) -> None:
        loaded = self.loaded
        if loaded is None:
            return
        record = loaded.record
        state = loaded.state
        if self.core.gate.waiting(run_id=self.run_id) and state == RunState.RUNNING:
            state = AWAITING
        icon, _ = RUN_ICONS.get(state, ("?", ""))
        done = sum(1 for t in loaded.tasks.values() if TaskState(t.state).done)
        end = clock() if loaded.state.active else record.updated_at
        self.title_label.update(
            f"{icon} {record.name or record.workflow_id}  ·  run {record.id}  ·  {state}  ·  "
            f"{done}/{len(loaded.tasks)} done  ·  {duration_text(end - record.created_at)}")
        self.title_label.set_classes(f"-{state.replace(' ', '-')}")

    def _task_ids(self) -> list[str]:
        ids = [t.id for t in self.tasks]
        if self.loaded is not None:
            ids += [task_id for task_id in self.loaded.tasks if task_id not in ids]
        return ids

    def _render_table(self) -> None:
        table = self.table
        ids = self._task_ids()
        if [str(k.value) for k in table.rows] != ids:
            cursor = self.selected
            table.clear()
            for task_id in ids:
                table.add_row(*self._cells(task_id), key=task_id)
            if cursor in ids:
                table.move_cursor(row=ids.index(cursor))
        else:
            for task_id in ids:
                for column, value in zip(("icon", "task", "state", "time"), self._cells(task_id), strict=True):
                    table.update_cell(task_id, column, value, update_width=True)
        if self.selected is None and ids:
            # Opened for a call that waits (ctrl+g): show the task it belongs to.
            waiting = [p.call.task_id for p in self.core.gate.waiting(run_id=self.run_id) if p.call.task_id in ids]
            if waiting:
                self.selected = waiting[0]
                table.move_cursor(row=ids.index(waiting[0]))
            else:
                self.selected = ids[table.cursor_row] if 0 <= table.cursor_row < len(ids) else ids[0]

    def _cells(self, task_id: str) -> tuple[Text, Text, Text, str]:
        state = self.task_state(task_id)
        icon, style = TASK_ICONS.get(state, ("?", ""))
        record = self.loaded.tasks.get(task_id) if self.loaded else None
        seconds = None
        if record is not None and record.started_at is not None:
            seconds = (record.finished_at or clock()) - record.started_at
        label = SHORT_STATES.get(state, state)
        if record is not None and record.attempt > 1:
            label += f" ×{record.attempt}"  # the attempt it is on (or ended on)
        return Text(icon, style), Text(task_id), Text(label, style), duration_text(seconds)

    def _render_streamed(self) -> None:
        self._detail_due = None
        self._render_live()

    def _render_detail(self) -> None:
        task_id = self.selected
        if task_id is None:
            self.detail.update(Text("no tasks", "dim"))
        else:
            self.detail.update(self.describe_task(task_id))
        self._render_live()

    def _render_live(self) -> None:
        task_id = self.selected
        record = self.loaded.tasks.get(task_id) if self.loaded and task_id else None
        live = self.live_text.get(task_id) if task_id else None
        showing = bool(live) and (record is None or record.state == TaskState.RUNNING)
        self.live_view.display = showing
        if showing:
            scroll = self.query_one("#detail-scroll", VerticalScroll)
            # Follow the reply as it grows, unless the user scrolled up to read something.
            following = scroll.max_scroll_y == 0 or scroll.scroll_y >= scroll.max_scroll_y - 1
            title = "Reply so far"
            if task_id in self.live_tokens:
                title += "  " + live_pace(*self.live_tokens[task_id], clock())
            self.live_view.update(Group(_section(title), Text(live or "")))
            if following:
                scroll.call_after_refresh(scroll.scroll_end, animate=False)

    def describe_task(self, task_id: str) -> RenderableType:
        """The selected task: what it ran with, what came out, and what went wrong."""
        task = next((t for t in self.tasks if t.id == task_id), None)
        record = self.loaded.tasks.get(task_id) if self.loaded else None
        state = self.task_state(task_id)
        parts: list[RenderableType] = []
        icon, style = TASK_ICONS.get(state, ("?", ""))
        kind = f" ({task.type}{': ' + task.tool if task and task.tool else ''})" if task else ""
        parts.append(Text.assemble((f"{icon} {task_id}", "bold"), (kind, "dim"), ("  " + state.replace("_", " "), style)))
        if record is not None and record.attempt > 1:
            parts.append(Text(f"attempt {record.attempt}", "yellow"))
        stats = (record.rendered or {}).get("stats") if record is not None else None
        if isinstance(stats, dict):
            parts.append(Text(generation_line(stats), "cyan"))
        if record is not None and record.error:
            parts.append(_section("Error"))
            parts.append(Text(record.error, "red"))
        rendered = record.rendered if record is not None else None
        edited = self.edited_inputs(task_id)
        if edited is not None:
            # What ran, not what the workflow wrote: a person edited the call before approving it.
            ran, written = edited
            parts.append(_section("Inputs (edited before they ran)"))
            parts.append(json_view(ran))
            parts.append(Text(f"the workflow's: {one_line(written)}", "dim"))
        elif rendered and rendered.get("inputs"):
            parts.append(_section("Inputs"))
            parts.append(json_view(rendered["inputs"]))
        if rendered and rendered.get("system"):
            parts.append(_section("System"))
            parts.append(Text(str(rendered["system"])))
        if rendered and rendered.get("prompt") is not None:
            parts.append(_section("Prompt"))
            parts.append(Text(str(rendered["prompt"])))
        elif not rendered and task is not None and state in (TaskState.PENDING, TaskState.UPSTREAM_FAILED,
                                                             TaskState.SKIPPED):
            parts.append(Text("not run yet" if state == TaskState.PENDING else "did not run", "dim italic"))
        if record is not None and record.state == TaskState.SUCCEEDED:
            parts.append(_section("Output"))
            parts.append(self._outputs(task_id, record))
            if self.selected_output() is not None and task_id == self.selected:
                parts.append(Text(key_hint(self.app, self.BINDINGS, (("run.preview", "preview"), ("run.open", "open"))),
                                  "dim"))
        return Group(*parts)

    def edited_inputs(self, task_id: str) -> tuple[Any, Any] | None:
        """(the arguments the task's call ran with, the workflow's) when a person edited them."""
        if self.loaded is not None and task_id in self.loaded.edited:
            return self.loaded.edited[task_id]
        return self._answered_edits.get(task_id)

    def _outputs(self, task_id: str, record: TaskRecord) -> RenderableType:
        if not record.outputs:
            return Text("(the task declares no outputs)", "dim italic")
        # A finished task's artifacts (tables read back from Parquet) are read once, when the run
        # is (re)loaded, and rendered once.
        key = (task_id, record.attempt, record.finished_at)
        if key not in self._shown_outputs:
            values = self._outputs_read.get(key)
            if values is None:
                return Text("reading the outputs…", "dim italic")
            if isinstance(values, str):
                return Text(values, "red")
            self._shown_outputs[key] = Group(
                *(item for name, value in values.items() for item in (Text(name, "bold"), output_view(value))))
        return self._shown_outputs[key]

    # -- events ----------------------------------------------------------------------------------

    @on(BusEvent)
    def _bus_event(self, message: BusEvent) -> None:
        event = message.event
        if isinstance(event, ApprovalNeeded):
            if event.call.run_id == self.run_id:
                self._add_card(event.request)
                self._render_table()
                self._render_title()
            return
        if isinstance(event, ToolCallFinished):
            self._drop_card(event.call.id)
            if event.call.run_id == self.run_id:
                self.reload()
            return
        if isinstance(event, TaskToken) and event.run_id == self.run_id:
            count, first = self.live_tokens.get(event.task_id, (0, clock()))
            self.live_tokens[event.task_id] = (count + 1, first)
            if event.thinking:
                return
            text = (self.live_text.get(event.task_id, "") + event.text)[-LIVE_TEXT_LIMIT:]
            self.live_text[event.task_id] = text
            if event.task_id == self.selected and self._detail_due is None:
                # A reply streams in token by token: the detail is drawn again at most six
                # times a second, not once per token.
                self._detail_due = self.set_timer(1 / REPAINTS_PER_SECOND, self._render_streamed)
            return
        if isinstance(event, RunsChanged) and self.run_id in event.run_ids:
            self.reload()
            self.log_pane.nudge()
            return
        if isinstance(event, TaskStateChanged | RunStateChanged | RunFinished) and event.run_id == self.run_id:
            if isinstance(event, TaskStateChanged) and event.state == TaskState.RUNNING:
                self.live_text.pop(event.task_id, None)
                self.live_tokens.pop(event.task_id, None)
                self._answered_edits.pop(event.task_id, None)  # a new attempt: that edit is history
            self.reload()
            self.log_pane.nudge()

    def _add_card(self, request: ApprovalRequest) -> None:
        if request.call.id in self.cards:
            return
        card = card_for(self.core, request)
        self.cards[request.call.id] = card
        self.approvals.mount(card)
        # Not focused: a key meant for the table must not answer a call that just appeared. The
        # user moves to it (ctrl+g, "a", a click, tab); the card says how.
        self._number_cards()
        self.query_one("#detail-scroll", VerticalScroll).scroll_home(animate=False)

    def _number_cards(self) -> None:
        """Each waiting card names its place among this run's waiting calls, oldest first."""
        order = self._waiting_ids()
        for call_id, card in self.cards.items():
            card.position = (order.index(call_id) + 1, len(order)) if call_id in order else None

    def _waiting_ids(self) -> list[str]:
        """This run's waiting calls that have a card here, the one that has waited longest first."""
        return [r.call.id for r in self.core.gate.waiting(run_id=self.run_id) if r.call.id in self.cards]

    def focus_card(self, call_id: str) -> bool:
        """Select a waiting call's card (the user asked: ctrl+g, "a"); False if it has none here."""
        card = self.cards.get(call_id)
        if card is None or not card.is_attached or card.settled:
            return False
        self.set_focus(card)  # at once, not after a refresh: a second ctrl+g must find it there
        self.query_one("#detail-scroll", VerticalScroll).scroll_to_widget(card, animate=False)
        return True

    def _leave_card(self) -> None:
        """The focus goes back to the table, where the detail is, and not on to another card: a
        key pressed twice answers one call."""
        self._cursor_to_selected()
        self.table.focus()

    def _drop_card(self, call_id: str) -> None:
        card = self.cards.pop(call_id, None)
        if card is None:
            return
        had_focus = card.has_focus
        card.remove()
        if had_focus:
            self._leave_card()
        self._number_cards()

    def _cursor_to_selected(self) -> None:
        ids = [str(key.value) for key in self.table.rows]
        if self.selected in ids and self.table.cursor_row != ids.index(self.selected):
            self.table.move_cursor(row=ids.index(self.selected))

    @on(ApprovalCard.Answered)
    def _answered(self, message: ApprovalCard.Answered) -> None:
        message.stop()
        card = self.cards.get(message.call_id)
        decision = message.decision
        if not self.core.gate.answer(message.call_id, decision):
            if card is not None:
                card.settle("already answered", replace=True)
        elif decision.kind == "edit" and card is not None and card.request.call.task_id:
            # The detail shows the edited inputs at once; the audit trail has them from the next load.
            self._answered_edits[card.request.call.task_id] = (decision.arguments, dict(card.request.call.arguments))
            self._render_detail()
        if card is not None and card.has_focus:
            self._leave_card()
        self._number_cards()
        self.set_timer(0.3, self.reload)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        # A rebuilt table first highlights its top row, then the row it moves back to; by the time
        # the first message arrives the cursor is elsewhere, and following it would lose the task.
        if event.row_key.value is not None and event.cursor_row == self.table.cursor_row:
            self.selected = str(event.row_key.value)
            self._render_detail()
            self.refresh_bindings()

    # -- actions ---------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.loaded.state if self.loaded else None
        if action == "cancel_run":
            return self.core.runs.is_running(self.run_id)
        if action == "retry_task":
            selected = self.task_state(self.selected) if self.selected is not None else AWAITING
            return (not self.core.runs.is_running(self.run_id) and selected in TASK_STATES
                    and TaskState(selected).retryable and state is not None and not state.active)
        if action == "resume_run":
            return not self.core.runs.is_running(self.run_id) and state is not None and state.resumable
        if action == "next_approval":
            return bool(self.cards)
        if action in ("preview_output", "open_output"):
            return self.selected_output() is not None
        if action == "rerun":
            return self.loaded is not None and bool(self.loaded.record.file)
        if action == "delete_run":
            return not self.core.runs.is_running(self.run_id) and state is not None and not state.active
        return True

    def action_back(self) -> None:
        self.dismiss()

    def action_cancel_run(self) -> None:
        self._confirm_cancel()

    @work(group="run-cancel", exclusive=True)
    async def _confirm_cancel(self) -> None:
        """Cancelling stops work in progress: asked first (the dialog's focus starts on "keep")."""
        if not self.core.runs.is_running(self.run_id):
            return
        question = f"Cancel run {self.run_id}? Its running tasks stop; u resumes it later."
        if not await self.app.push_screen_wait(
                ConfirmDialog(question, confirm_label="Cancel run", cancel_label="Keep running")):
            return
        if self.core.runs.cancel(self.run_id):
            self.notify(f"cancelling run {self.run_id}")

    def action_retry_task(self) -> None:
        if self.selected is not None:
            self._do(lambda: self.core.runs.retry_task(self.run_id, self.selected or ""),
                     f"retrying {self.selected}")

    def action_resume_run(self) -> None:
        self._do(lambda: self.core.runs.resume(self.run_id), f"resuming run {self.run_id}")

    @work(group="run-command")
    async def _do(self, command: Callable[[], Any], done: str) -> None:
        try:
            await command()
        except SmoltuiError as error:
            self.notify(str(error), title="Run", severity="error", timeout=10)
            return
        self.notify(done)
        self.live_text.clear()
        self.reload()

    def action_rerun(self) -> None:
        self._rerun()

    @work(group="run-command", exclusive=True)
    async def _rerun(self) -> None:
        """A new run of the same file with the same variables; the view moves to it."""
        try:
            new_id = await self.core.runs.rerun(self.run_id)
        except SmoltuiError as error:
            self.notify(str(error), title="Run", severity="error", timeout=10)
            return
        self.notify(f"run {new_id} started with the variables of {self.run_id}")
        # Not awaited here: this worker belongs to the screen being replaced.
        self.app.call_later(self.app.switch_screen, RunScreen(self.core, new_id))

    def action_delete_run(self) -> None:
        self._confirm_delete()

    @work(group="run-command", exclusive=True)
    async def _confirm_delete(self) -> None:
        """Deleting cannot be undone: asked first (the focus starts on "keep")."""
        question = f"Delete run {self.run_id} with its artifacts? This cannot be undone."
        if not await self.app.push_screen_wait(ConfirmDialog(question, confirm_label="Delete run",
                                                             cancel_label="Keep it")):
            return
        try:
            await self.core.runs.delete(self.run_id)
        except SmoltuiError as error:
            self.notify(str(error), title="Run", severity="error", timeout=10)
            return
        self.notify(f"deleted run {self.run_id}")
        self.dismiss()

    def action_next_approval(self) -> None:
        """To the call that has waited longest; from a card, to the one that has waited next longest."""
        order = self._waiting_ids()
        if not order:
            return
        focused = self.focused
        current = focused.call_id if isinstance(focused, ApprovalCard) else None
        index = order.index(current) + 1 if current in order else 0
        self.focus_card(order[index % len(order)])

    def action_toggle_logs(self) -> None:
        self.log_pane.display = not self.log_pane.display

    def selected_output(self) -> Previewable | None:
        """The selected task's first output worth previewing (a file, a table, text, JSON)."""
        record = self.loaded.tasks.get(self.selected) if self.loaded and self.selected else None
        if record is None or record.state != TaskState.SUCCEEDED:
            return None
        values = self._outputs_read.get((record.task_id, record.attempt, record.finished_at))
        if not isinstance(values, dict):
            return None
        return next((item for name, value in values.items()
                     if (item := previewable(f"{record.task_id}.{name}", value)) is not None), None)

    def action_preview_output(self) -> None:
        item = self.selected_output()
        if item is not None:
            self.app.push_screen(PreviewScreen(item, export_dir=self.core.run_store.artifacts_dir(self.run_id)))

    def action_open_output(self) -> None:
        self._open_output()

    @work(group="run-open", exclusive=True)
    async def _open_output(self) -> None:
        item = self.selected_output()
        if item is not None:
            await open_item(self.app, item, self.core.run_store.artifacts_dir(self.run_id))


def edited_calls(rows: list[AuditEntry], tasks: dict[str, TaskRecord]) -> dict[str, tuple[Any, Any]]:
    """task id -> (arguments that ran, the workflow's) for each task whose call in its current
    attempt a person edited; ``rows``: the run's audit rows, newest first."""
    edited: dict[str, tuple[Any, Any]] = {}
    seen: set[str] = set()
    for row in rows:
        task = tasks.get(row.task_id or "")
        if task is None or task.task_id in seen:
            continue
        seen.add(task.task_id)  # the newest row of a task is its call; older ones, earlier attempts
        started = task.started_at
        if row.original_arguments is not None and (started is None or row.created_at >= started):
            edited[task.task_id] = (row.arguments, row.original_arguments)
    return edited


def generation_line(stats: dict[str, Any]) -> str:
    """An LLM task's generation in one line: tokens, speed, time (and the prompt's share)."""
    tokens = stats.get("completion_tokens", 0)
    line = f"model: {tokens} token{'s' if tokens != 1 else ''}"
    if stats.get("decode_tok_s"):
        line += f" · {stats['decode_tok_s']:.1f} tok/s"
    if stats.get("total_s") is not None:
        line += f" · {stats['total_s']:.1f} s"
    extra = []
    if stats.get("prompt_tokens"):
        extra.append(f"prompt {stats['prompt_tokens']} tokens")
    if stats.get("ttft_s") is not None:
        extra.append(f"first token after {stats['ttft_s']:.1f} s")
    if stats.get("stop_reason") not in (None, "stop"):
        extra.append(f"stopped: {stats['stop_reason']}")
    return line + (f" ({', '.join(extra)})" if extra else "")


def live_pace(tokens: int, first: float, now: float) -> str:
    """A streaming reply's pace: ``37 tokens · 9.1 tok/s · 4 s``."""
    seconds = max(0.0, now - first)
    pace = f" · {tokens / seconds:.1f} tok/s" if tokens > 1 and seconds > 0 else ""
    return f"{tokens} token{'s' if tokens != 1 else ''}{pace} · {seconds:.0f} s"


def _section(title: str) -> Text:
    return Text(f"\n{title}", "bold underline")

