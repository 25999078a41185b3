"""The workflow tree: folders, their workflow files, and each file's recent runs.

It shows a :class:`CatalogSnapshot` and never polls: the host calls :meth:`WorkflowTree.nudge` when
the bus says a file or a run changed (the core's watcher announces what other processes and
editors change), and the tree scans the catalog again. Picking a workflow posts :class:`WorkflowTree.LaunchRequested`,
picking a run :class:`WorkflowTree.RunPicked`; the screen decides what to do with them.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.style import NULL_STYLE, Style
from rich.text import Text
from textual import on, work
from textual.app import SuspendNotSupported
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from smoltui.orchestrator.workflow_catalog import CatalogSnapshot, RunSummary, WorkflowCatalog, WorkflowEntry
from smoltui.screens.state_icons import STATE_STYLES

log = logging.getLogger(__name__)

RUN_ICONS = STATE_STYLES


@dataclass(frozen=True)
class _WorkflowNode:
    entry: WorkflowEntry


@dataclass(frozen=True)
class _RunNode:
    run: RunSummary
    entry: WorkflowEntry


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def short_path(path: Path, limit: int = 28) -> str:
    """A folder as a narrow pane can show it: ``~`` for home, and its end (the telling part) kept."""
    text = str(path)
    home = str(Path.home())
    if text == home or text.startswith(home + "/"):
        text = "~" + text[len(home):]
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


class WorkflowTree(Tree[Any]):
    DEFAULT_CSS = """
    WorkflowTree {
        background: $surface;
        padding: 0 1 0 0;
        scrollbar-size-vertical: 1;
        overflow-x: hidden;  /* long labels are cut; a one-line scrollbar would eat a row */
    }
    """

    BINDINGS = [
        Binding("n", "launch", "Run…", id="workflows.launch"),
        Binding("r", "refresh", "Refresh", id="workflows.refresh", show=False),
        Binding("e", "edit", "Edit", id="workflows.edit"),
    ]

    class LaunchRequested(Message):
        def __init__(self, entry: WorkflowEntry) -> None:
            super().__init__()
            self.entry = entry

    class RunPicked(Message):
        def __init__(self, run_id: str, entry: WorkflowEntry) -> None:
            super().__init__()
            self.run_id = run_id
            self.entry = entry

    def __init__(self, catalog: WorkflowCatalog, *, id: str | None = None) -> None:
        super().__init__("workflows", id=id)
        self.catalog = catalog
        self.show_root = False
        self.auto_expand = False  # enter on a workflow launches it; space opens its runs
        self.guide_depth = 2
        self.snapshot: CatalogSnapshot | None = None
        self._awaiting: set[str] = set()  # runs with a tool call waiting for the user

    def on_mount(self) -> None:
        self.border_title = "Workflows"
        self.nudge()

    # -- refresh ---------------------------------------------------------------------------------

    def nudge(self) -> None:
        """Read the folders and the runs again (the screen calls this when the bus says a file or
        a run changed)."""
        self._scan()

    @work(exclusive=True, group="workflow-tree")
    async def _scan(self) -> None:
        try:
            snapshot = await self.catalog.scan()
        except Exception:  # a vanished folder or a busy store: keep what is shown, try again later
            log.exception("scanning workflows failed")
            return
        self.show_snapshot(snapshot)

    def set_awaiting(self, run_ids: set[str]) -> None:
        """Runs with a tool call waiting for approval (shown with their own icon)."""
        if run_ids != self._awaiting:
            self._awaiting = set(run_ids)
            if self.snapshot is not None:
                self.show_snapshot(self.snapshot)

    def show_snapshot(self, snapshot: CatalogSnapshot) -> None:
        self.snapshot = snapshot
        expanded = {self._key(node) for node in self._walk(self.root) if node.is_expanded}
        cursor_key = self._key(self.cursor_node) if self.cursor_node is not None else None
        first = not self.root.children
        self.clear()
        for folder in snapshot.folders:
            entries = snapshot.in_folder(folder)
            label = Text.assemble((folder.label, "bold"), (f"  {short_path(folder.path)}", "dim"))
            if folder in snapshot.missing:
                label.append("  (not there yet)", "dim italic")
            folder_node = self.root.add(label, data=("folder", str(folder.path)),
                                        expand=first or ("folder", str(folder.path)) in expanded)
            if not entries:
                folder_node.add_leaf(Text("no workflows", "dim italic"))
            for entry in entries:
                node = folder_node.add(self._entry_label(entry), data=_WorkflowNode(entry),
                                       expand=self._key_of(_WorkflowNode(entry)) in expanded)
                if entry.problems:
                    for problem in entry.problems:
                        where = f"{problem.line}:{problem.col} " if problem.line else ""
                        node.add_leaf(Text.assemble(("✗ ", "red"), (where, "dim"), problem.message))
                for run in entry.runs:
                    node.add_leaf(self._run_label(run), data=_RunNode(run, entry))
                if not entry.problems and not entry.runs:
                    node.add_leaf(Text("no runs yet", "dim italic"))
        # Node lines are only known once the tree has laid them out.
        self.call_after_refresh(self._restore_cursor, cursor_key, first)

    def _restore_cursor(self, key: Any, first: bool) -> None:
        nodes = self._walk(self.root)
        target = next((n for n in nodes if key is not None and self._key(n) == key), None)
        if target is None and first:  # start on the first workflow: enter runs it
            target = next((n for n in nodes if isinstance(n.data, _WorkflowNode)), None)
        if target is not None and target.line >= 0:
            self.cursor_line = target.line

    def _entry_label(self, entry: WorkflowEntry) -> Text:
        label = Text.assemble(("✗ ", "bold red") if entry.problems else "", (entry.title, "bold"))
        if entry.problems:
            count = len(entry.problems)
            label.append(f"  {count} problem{'s' if count != 1 else ''}", "red")
        else:
            label.append(f"  {entry.path.name}", "dim")
        return label

    def _run_label(self, run: RunSummary, *, with_state: bool = True) -> Text:
        """Icon, start time, state and duration; without the state word for a narrow pane (the
        icon says it too)."""
        state = "awaiting approval" if run.id in self._awaiting else run.state
        icon, style = RUN_ICONS.get(state, ("?", ""))
        same_day = time.localtime(run.created_at)[:3] == time.localtime()[:3]
        when = time.strftime("%H:%M" if same_day else "%m-%d %H:%M", time.localtime(run.created_at))
        return Text.assemble((f"{icon} ", style), (when, ""), (f"  {state}", style) if with_state else "",
                             (f"  {duration_text(run.duration_s)}", "dim"))

    # -- labels that fit -------------------------------------------------------------------------

    def _indent(self, node: TreeNode[Any]) -> int:
        """Cells of guides left of ``node``'s label."""
        depth = 0
        parent = node.parent
        while parent is not None:
            depth += 1
            parent = parent.parent
        levels = depth if self.show_root else depth - 1
        return max(0, levels) * self.guide_depth

    def render_label(self, node: TreeNode[Any], base_style: Style, style: Style) -> Text:
        """The label, ending in "…" where the pane cuts it (a run drops its state word first)."""
        text = super().render_label(node, base_style, style)
        room = self.size.width - self._indent(node)
        if room <= 0 or text.cell_len <= room:
            return text
        if isinstance(node.data, _RunNode):
            compact = self._run_label(node.data.run, with_state=False)
            compact.stylize(style)
            if compact.cell_len <= room:
                return compact
            text = compact
        text = text.copy()
        text.truncate(room, overflow="ellipsis")
        return text

    def get_label_width(self, node: TreeNode[Any]) -> int:
        return super().render_label(node, NULL_STYLE, NULL_STYLE).cell_len  # uncut

    def _walk(self, node: TreeNode[Any]) -> list[TreeNode[Any]]:
        found = []
        for child in node.children:
            found.append(child)
            found.extend(self._walk(child))
        return found

    # -- reading ---------------------------------------------------------------------------------

    def labels(self) -> list[str]:
        """Every node's label as plain text, depth first (folded nodes' children too)."""
        return [str(node.label) for node in self._walk(self.root)]

    def run_label(self, run_id: str) -> str | None:
        """The label of run ``run_id``'s node as plain text (None: the tree does not show it)."""
        for node in self._walk(self.root):
            if isinstance(node.data, _RunNode) and node.data.run.id == run_id:
                return str(node.label)
        return None

    def _key(self, node: TreeNode[Any]) -> Any:
        return self._key_of(node.data)

    @staticmethod
    def _key_of(data: Any) -> Any:
        if isinstance(data, _WorkflowNode):
            return ("workflow", str(data.entry.path))
        if isinstance(data, _RunNode):
            return ("run", data.run.id)
        return data

    # -- picking ---------------------------------------------------------------------------------

    @property
    def selected_entry(self) -> WorkflowEntry | None:
        node = self.cursor_node
        while node is not None:
            if isinstance(node.data, _WorkflowNode):
                return node.data.entry
            if isinstance(node.data, _RunNode):
                return node.data.entry
            node = node.parent
        return None

    @on(Tree.NodeSelected)
    def _selected(self, event: Tree.NodeSelected[Any]) -> None:
        data = event.node.data
        if isinstance(data, _RunNode):
            event.stop()
            self.post_message(self.RunPicked(data.run.id, data.entry))
        elif isinstance(data, _WorkflowNode):
            event.stop()
            self.post_message(self.LaunchRequested(data.entry))
        else:
            event.node.toggle()

    def action_launch(self) -> None:
        entry = self.selected_entry
        if entry is None:
            self.notify("move to a workflow first", severity="warning")
            return
        self.post_message(self.LaunchRequested(entry))

    def action_refresh(self) -> None:
        self.nudge()

    def action_edit(self) -> None:
        """Open the selected workflow in ``$VISUAL``/``$EDITOR`` (the app steps aside meanwhile),
        then check it again and say what the check found."""
        entry = self.selected_entry
        if entry is None:
            self.notify("move to a workflow first", severity="warning")
            return
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        command = [*shlex.split(editor), str(entry.path)]
        try:
            try:
                with self.app.suspend():
                    subprocess.run(command, check=False)
            except SuspendNotSupported:
                if not self.app.is_headless:  # a terminal we cannot hand over: say so, run nothing
                    self.notify("this terminal cannot hand over to an editor", severity="warning")
                    return
                subprocess.run(command, check=False, stdin=subprocess.DEVNULL)  # tests: no terminal
        except OSError as error:
            self.notify(f"cannot start the editor {editor!r}: {error}", severity="error", timeout=10)
            return
        self.catalog.revalidate()
        self._checked_after_edit(entry.path)

    @work(exclusive=True, group="workflow-tree")
    async def _checked_after_edit(self, path: Path) -> None:
        try:
            snapshot = await self.catalog.scan()
        except Exception:
            log.exception("scanning workflows failed")
            return
        self.show_snapshot(snapshot)
        entry = next((e for e in snapshot.entries if e.path == path), None)
        if entry is None:
            self.notify(f"{path.name} is gone", severity="warning")
        elif entry.valid:
            self.notify(f"{path.name} is valid", title="Workflow checked")
        else:
            count, first = len(entry.problems), entry.problems[0]
            self.notify(f"{path.name}: {count} problem{'s' if count != 1 else ''}; line {first.line}:{first.col}: "
                        f"{first.message}",
                        title="Workflow checked", severity="warning", timeout=10)
