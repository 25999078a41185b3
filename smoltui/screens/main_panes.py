"""The main screen's workflow panes: the workflow tree on the left and the run log at the bottom.

:class:`WorkflowPanes` is mixed into the chat screen, which composes the widgets it creates. It
shows and hides the panes to fit the terminal (at 80x24 both start hidden, on a wide terminal both
are shown), lets the user toggle and resize each by key, launches workflows from the tree through
the launch form, and opens the run view.
"""

from __future__ import annotations

import logging
from typing import Any

from textual import work
from textual.binding import Binding
from textual.events import Resize
from textual.widgets import Tree

from smoltui.core import Core
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.events import (
    ApprovalNeeded,
    RunFinished,
    RunsChanged,
    RunStateChanged,
    TaskLog,
    TaskStateChanged,
    ToolCallFinished,
    ToolsChanged,
    WorkflowsChanged,
)
from smoltui.screens.launch_dialog import LaunchDialog
from smoltui.screens.log_pane import LogPane
from smoltui.screens.run_view import RunScreen
from smoltui.screens.workflow_tree import WorkflowTree, _RunNode

log = logging.getLogger(__name__)

LAYOUT_BINDINGS = [
    Binding("f3", "toggle_workflows", "Workflows", id="layout.workflows"),
    Binding("f4", "toggle_logs", "Log", id="layout.logs"),
    Binding("alt+right", "resize_tree(4)", "Wider workflow tree", id="layout.tree_wider", show=False),
    Binding("alt+left", "resize_tree(-4)", "Narrower workflow tree", id="layout.tree_narrower", show=False),
    Binding("alt+up", "resize_logs(2)", "Taller log", id="layout.logs_taller", show=False),
    Binding("alt+down", "resize_logs(-2)", "Shorter log", id="layout.logs_shorter", show=False),
]

WIDE_COLUMNS = 110
TALL_ROWS = 32
TREE_WIDTH = (34, 20)  # default, minimum
LOG_HEIGHT = (10, 3)


class WorkflowPanes:
    """Mixin for the main (chat) screen; call :meth:`_init_panes` from ``__init__``."""

    core: Core
    workflow_tree: WorkflowTree | None
    log_pane: LogPane | None

    def _init_panes(self, core: Core) -> None:
        self.core = core
        self.workflow_tree = WorkflowTree(core.catalog, id="workflows")
        self.log_pane = LogPane(core.run_store, id="logs")
        self._tree_pinned: bool | None = None
        self._logs_pinned: bool | None = None
        self._tree_width = TREE_WIDTH[0]
        self._log_height = LOG_HEIGHT[0]
        self._bus_unsubscribe: Any = None

    def _mount_panes(self) -> None:
        screen: Any = self
        if self.core is None:
            return
        self._bus_unsubscribe = self.core.bus.subscribe(
            lambda event: screen.call_later(self._workflow_event, event))
        self._apply_layout()

    def _unmount_panes(self) -> None:
        if self._bus_unsubscribe is not None:
            self._bus_unsubscribe()
            self._bus_unsubscribe = None

    # -- layout ----------------------------------------------------------------------------------

    def on_resize(self, event: Resize) -> None:
        self._apply_layout()

    def _tree_visible(self) -> bool:
        screen: Any = self
        if self._tree_pinned is not None:
            return self._tree_pinned
        return screen.size.width >= WIDE_COLUMNS

    def _logs_visible(self) -> bool:
        screen: Any = self
        if self._logs_pinned is not None:
            return self._logs_pinned
        return screen.size.width >= WIDE_COLUMNS and screen.size.height >= TALL_ROWS

    def _apply_layout(self) -> None:
        tree, logs = self.workflow_tree, self.log_pane
        if tree is None or logs is None:
            return
        tree.display = self._tree_visible()
        tree.styles.width = self._shown_tree_width()
        logs.display = self._logs_visible()
        logs.styles.height = self._shown_log_height()

    # The sizes the user chose are kept; a small terminal only shows the panes smaller for as long
    # as it is small (shrinking the window for a moment does not shrink them for good).

    def _shown_tree_width(self) -> int:
        width = self._screen_size()[0]
        return max(TREE_WIDTH[1], min(self._tree_width, max(TREE_WIDTH[1], width - 30)))

    def _shown_log_height(self) -> int:
        height = self._screen_size()[1]
        return max(LOG_HEIGHT[1], min(self._log_height, max(LOG_HEIGHT[1], height - 10)))

    def _screen_size(self) -> tuple[int, int]:
        screen: Any = self
        return screen.size.width, screen.size.height

    def action_toggle_workflows(self) -> None:
        if self.workflow_tree is None:
            return
        if self._tree_visible() and not self.workflow_tree.has_focus:
            self.workflow_tree.focus()  # shown but elsewhere: the key goes to the tree first
            return
        show = not self._tree_visible()
        self._tree_pinned = show
        self._apply_layout()
        if show:
            self.workflow_tree.focus()
        elif self.workflow_tree.has_focus:
            self._focus_prompt()

    def action_toggle_logs(self) -> None:
        if self.log_pane is None:
            return
        show = not self._logs_visible()
        self._logs_pinned = show
        self._apply_layout()
        if not show and self.log_pane.has_focus_within:
            self._focus_prompt()

    def action_resize_tree(self, delta: int) -> None:
        self._tree_pinned = True
        self._tree_width = max(TREE_WIDTH[1], self._shown_tree_width() + delta)
        self._apply_layout()

    def action_resize_logs(self, delta: int) -> None:
        self._logs_pinned = True
        self._log_height = max(LOG_HEIGHT[1], self._shown_log_height() + delta)
        self._apply_layout()

    def _focus_prompt(self) -> None:
        screen: Any = self
        screen.query_one("#prompt").focus()

    def check_pane_action(self, action: str) -> bool | None:
        """The screen's ``check_action`` asks this first; None means "not a pane action"."""
        if action in ("toggle_workflows", "resize_tree"):
            return self.workflow_tree is not None
        if action in ("toggle_logs", "resize_logs"):
            return self.log_pane is not None
        return None

    # -- the tree --------------------------------------------------------------------------------

    def on_workflow_tree_launch_requested(self, message: WorkflowTree.LaunchRequested) -> None:
        message.stop()
        entry = message.entry
        screen: Any = self
        if entry.problems:
            first = entry.problems[0]
            more = f" (and {len(entry.problems) - 1} more)" if len(entry.problems) > 1 else ""
            screen.notify(f"{first}{more}", title=f"{entry.path.name} has problems", severity="error", timeout=12)
            return
        self._launch(entry)

    @work(group="launch")
    async def _launch(self, entry: Any) -> None:
        screen: Any = self
        assert self.core is not None
        request = await screen.app.push_screen_wait(LaunchDialog(entry))
        if request is None:
            return
        try:
            run_id = await self.core.runs.launch(entry.path, request.variables)
        except SmoltuiError as error:
            screen.notify(str(error), title="Cannot run", severity="error", timeout=12)
            return
        if self.workflow_tree is not None:
            self.workflow_tree.nudge()
        await screen.app.push_screen(RunScreen(self.core, run_id))

    def on_workflow_tree_run_picked(self, message: WorkflowTree.RunPicked) -> None:
        message.stop()
        self.open_run(message.run_id)

    def open_run(self, run_id: str) -> None:
        screen: Any = self
        if self.core is not None:
            screen.app.push_screen(RunScreen(self.core, run_id))

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Any]) -> None:
        if self.log_pane is None or event.control is not self.workflow_tree:
            return
        data = event.node.data
        self.log_pane.run_id = data.run.id if isinstance(data, _RunNode) else None

    # -- events ----------------------------------------------------------------------------------

    def _workflow_event(self, event: Any) -> None:
        if isinstance(event, RunStateChanged | TaskStateChanged | TaskLog | RunFinished | RunsChanged):
            self.log_pane.nudge()
            if isinstance(event, RunStateChanged | RunFinished | RunsChanged):
                self.workflow_tree.nudge()
        elif isinstance(event, WorkflowsChanged | ToolsChanged):
            self.workflow_tree.nudge()  # a file edited, or a tool it calls came or went
        elif isinstance(event, ApprovalNeeded | ToolCallFinished):
            hook = getattr(self, "chat_approval_event", None)
            if hook is not None:
                hook(event)
            self.workflow_tree.set_awaiting({r.call.run_id for r in self.core.gate.waiting() if r.call.run_id})
