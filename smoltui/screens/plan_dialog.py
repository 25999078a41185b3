"""The planner dialog: describe a goal, the model drafts a workflow, review and edit it, save it.

The draft streams in as the model writes it (JSON), with its progress (the try, tokens so far,
tok/s, a clock that ticks even while the model reads the prompt); the focus moves into the draft,
which then shows as YAML in an editor; every edit is checked again (debounced) and the problems are
listed under it. ``ctrl+s`` saves a valid draft under a fresh name (the workflow tree picks the file
up by itself) and says why it will not save one with problems; ``ctrl+o`` picks the folder: the
project's ``workflows/`` when there is one (the default: the draft's relative paths then reach the
project's files), else the user's workflow folder. ``ctrl+r`` drafts again, ``escape`` closes the
dialog. The dialog answers with the saved file's path, or None.

All the work is :class:`smoltui.orchestrator.planner.Planner`'s; this is only its face.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Input, Label, Static, TextArea

from smoltui.errors import SmoltuiError
from smoltui.orchestrator.planner import (
    DRAFT_FILE,
    DraftProgress,
    Planner,
    next_free_path,
    save_folders,
    save_workflow,
    workflow_stem,
)
from smoltui.orchestrator.workflow_spec import Problem
from smoltui.orchestrator.workflow_validate import validate_text
from smoltui.screens.form_input import FormInput
from smoltui.screens.workflow_tree import short_path

if TYPE_CHECKING:
    from smoltui.core import Core

log = logging.getLogger(__name__)

VALIDATE_DELAY_S = 0.3
CLOCK_S = 0.5
"""How often the drafting line is redrawn: its clock must tick while the model reads a long prompt."""
MAX_PROBLEMS_SHOWN = 50


class PlanDialog(ModalScreen[Path | None]):
    """Goal → draft → review → saved path (or None when cancelled)."""

    CSS_PATH = "plan_dialog.tcss"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="plan.save", priority=True),
        Binding("ctrl+r", "redraft", "Redraft", id="plan.redraft", priority=True),
        Binding("ctrl+o", "next_folder", "Save in", id="plan.folder", priority=True),
        Binding("escape", "cancel", "Cancel", id="plan.cancel"),
    ]

    def __init__(self, core: Core, folder: Path, *, goal: str = "") -> None:
        # Not the shared "dialog" class: this form has its own stylesheet, and dialogs.tcss (loaded
        # once any other dialog has been open) would otherwise outrank it and reshape the form.
        super().__init__()
        self.core = core
        self.tools = {tool.name: tool for tool in core.offered_tools()}
        # The project's workflows/ first when it has one: a draft's relative paths reach its files.
        self.folders = save_folders(core.settings.project_dir, Path(folder))
        self.folder = self.folders[0]
        self.initial_goal = goal
        self.planner: Planner | None = None
        self.drafting = False
        self.problems: list[Problem] = []
        self.saved: Path | None = None
        self._streamed = 0
        self._validate_timer: Timer | None = None
        self._clock: Timer | None = None
        self._started = 0.0
        self._waiting = False
        self._progress: DraftProgress | None = None
        self._fixing = ""

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Plan a workflow", classes="dialog-title")
            yield FormInput(self.initial_goal, placeholder="What should the workflow do? (enter drafts it)",
                            id="plan-goal", compact=True, select_on_focus=False)
            yield Label("Describe a goal and press enter.", id="plan-status", markup=False)
            editor = TextArea("", id="plan-yaml", read_only=True, show_line_numbers=True, soft_wrap=False)
            if "yaml" in editor.available_languages:
                editor.language = "yaml"
            yield editor
            with VerticalScroll(id="plan-problems-box"):
                yield Static("", id="plan-problems", markup=False)
            yield Label("", id="plan-folder", markup=False)
            yield Label("enter draft · ctrl+s save · ctrl+o folder · ctrl+r redraft · esc cancel",
                        classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#plan-problems-box").display = False
        self.show_folder()
        self.query_one("#plan-goal", Input).focus()
        if self.initial_goal.strip():
            self.start_draft()

    # -- state ---------------------------------------------------------------------------------

    @property
    def editor(self) -> TextArea:
        return self.query_one("#plan-yaml", TextArea)

    @property
    def goal(self) -> str:
        return " ".join(self.query_one("#plan-goal", Input).value.split())

    @property
    def can_save(self) -> bool:
        return not self.drafting and not self.problems and bool(self.editor.text.strip())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # ``save`` stays enabled whatever the draft's state: pressed on one that cannot be saved, it
        # says why (a disabled binding would swallow the key and say nothing).
        if action == "redraft":
            return True if self.goal else None
        if action == "next_folder":
            return True if len(self.folders) > 1 else None
        return True

    def why_not_saved(self) -> str | None:
        """Why ``ctrl+s`` would not save now, in words; None when it would."""
        if self.drafting:
            return "Not saved: the model is still drafting (esc stops it)."
        if not self.editor.text.strip():
            return "Not saved: there is no draft yet. Describe a goal and press enter."
        if self.problems:
            first = self.problems[0]
            more = len(self.problems) - 1
            rest = f" (and {more} more below)" if more else ""
            return f"Not saved: line {first.line}:{first.col}: {first.message}{rest}"
        return None

    def set_status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#plan-status", Label)
        status.update(text)
        status.set_class(error, "-error")

    def show_problems(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        box = self.query_one("#plan-problems-box")
        box.display = bool(problems)
        lines = [f"✗ line {p.line}:{p.col}: {p.message}" for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"… and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        self.query_one("#plan-problems", Static).update("\n".join(lines))
        self.editor.set_class(bool(problems), "-invalid")
        self.refresh_bindings()

    def show_folder(self) -> None:
        label = self.query_one("#plan-folder", Label)
        project = self.core.settings.project_dir
        where = "the project's workflows/" if self.folder.parent == Path(project).resolve() else "your workflow folder"
        label.update(f"Saves in {where}: {short_path(self.folder, 60)}")

    def action_next_folder(self) -> None:
        index = self.folders.index(self.folder) if self.folder in self.folders else -1
        self.folder = self.folders[(index + 1) % len(self.folders)]
        self.show_folder()
        if not self.drafting and self.editor.text.strip() and not self.problems:
            self.set_status(f"Valid: ctrl+s saves to {next_free_path(self.folder, workflow_stem(self.editor.text))}")

    # -- drafting ------------------------------------------------------------------------------

    @on(Input.Submitted, "#plan-goal")
    def _goal_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.start_draft()

    def action_redraft(self) -> None:
        self.start_draft()

    def start_draft(self) -> None:
        goal = self.goal
        if not goal:
            self.set_status("Describe a goal first.", error=True)
            self.query_one("#plan-goal", Input).focus()
            return
        if self.planner is not None:
            self.planner.cancel()
        self._draft(goal)

    @work(exclusive=True, group="plan-draft")
    async def _draft(self, goal: str) -> None:
        editor = self.editor
        self.drafting = True
        self._streamed = 0
        self.show_problems([])
        editor.read_only = True
        editor.load_text("")
        # The focus goes to the draft now: arrows scroll it while it streams and move the cursor after.
        editor.focus()
        self._started = time.monotonic()
        self._progress = None
        self._waiting = True
        self._fixing = ""
        self._tick()
        self._clock = self.set_interval(CLOCK_S, self._tick)
        self.refresh_bindings()
        try:
            async with self.core.model.turn("the planner") as backend:
                self.planner = planner = self.core.planner(backend)
                self.tools = dict(planner.tools)
                self._waiting = False
                draft = await planner.draft(goal, on_text=self._streamed_text, on_repair=self._repairing,
                                            on_progress=self._progressed)
        except Exception as error:  # the model failed to load or to generate: say so, stay open
            if not isinstance(error, SmoltuiError):
                log.exception("drafting a workflow failed")
            self._stop_clock()
            self.drafting = False
            self.set_status(f"Drafting failed: {error}", error=True)
            self.refresh_bindings()
            self.query_one("#plan-goal", Input).focus()
            return
        finally:
            editor.read_only = False
            self._stop_clock()
        self.drafting = False
        if draft.cancelled:
            self.set_status("Drafting stopped.")
            self.refresh_bindings()
            return
        editor.load_text(draft.yaml or draft.reply)
        editor.move_cursor((0, 0))
        # Streaming scrolled it to the end, after a refresh: back to the top after that one too.
        editor.call_after_refresh(editor.scroll_home, animate=False)
        self.show_problems(draft.problems if draft.yaml else self.check(editor.text) or draft.problems)
        tries = "" if draft.attempts == 1 else f" after {draft.attempts} tries"
        if self.problems:
            self.set_status(f"Draft ready{tries}, with problems: fix them, then ctrl+s saves.", error=True)
        else:
            target = next_free_path(self.folder, workflow_stem(editor.text))
            self.set_status(f"Draft ready{tries}: review it; ctrl+s saves to {target}")
        editor.focus()

    def _streamed_text(self, text: str) -> None:
        editor = self.editor
        editor.insert(text, editor.document.end)
        self._streamed += 1
        if self._streamed % 8 == 1:
            editor.scroll_end(animate=False)

    def _progressed(self, progress: DraftProgress) -> None:
        phase_changed = self._progress is None or self._progress.phase != progress.phase
        self._progress = progress
        if phase_changed:  # tokens are drawn by the clock; a new phase shows at once
            self._tick()

    def _tick(self) -> None:
        """Redraw the drafting line: what the model does, tokens so far, tok/s, time since enter."""
        if not self.drafting:
            return
        elapsed = time.monotonic() - self._started
        model = self.core.model
        if self._waiting or self._progress is None:
            if not model.ready.is_set():
                phase = "loading the model"
            elif self._waiting and model.holder:
                phase = f"waiting for the model ({model.holder} has it)"
            else:
                phase = "starting"
            self.set_status(f"Drafting… {phase} · {elapsed:.0f} s")
        else:
            self.set_status(f"Drafting… {self._fixing}{self._progress.describe(elapsed)}")

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.stop()
            self._clock = None

    def _repairing(self, problems: list[Problem]) -> None:
        count = len(problems)
        self._fixing = f"the model fixes {count} problem{'s' if count != 1 else ''} · "
        self.editor.load_text("")

    # -- editing -------------------------------------------------------------------------------

    def check(self, text: str) -> list[Problem]:
        return validate_text(text, DRAFT_FILE, tools=self.tools)

    @on(TextArea.Changed, "#plan-yaml")
    def _edited(self, event: TextArea.Changed) -> None:
        if self.drafting:
            return
        if self._validate_timer is not None:
            self._validate_timer.stop()
        self._validate_timer = self.set_timer(VALIDATE_DELAY_S, self.revalidate)

    def revalidate(self) -> None:
        self._validate_timer = None
        if self.drafting:
            return
        problems = self.check(self.editor.text) if self.editor.text.strip() else []
        self.show_problems(problems)
        if problems:
            many = len(problems) != 1
            self.set_status(f"{len(problems)} problem{'s' if many else ''}: fix {'them' if many else 'it'}, "
                            "then ctrl+s saves.", error=True)
        elif self.editor.text.strip():
            self.set_status(f"Valid: ctrl+s saves to {next_free_path(self.folder, workflow_stem(self.editor.text))}")

    # -- answers -------------------------------------------------------------------------------

    def action_save(self) -> None:
        if self._validate_timer is not None:  # an edit not checked yet: check it now
            self._validate_timer.stop()
            self.revalidate()
        why = self.why_not_saved()
        if why is not None:
            self.set_status(why, error=True)
            self.app.bell()
            return
        try:
            path = save_workflow(self.editor.text, self.folder)
        except OSError as error:
            self.set_status(f"Cannot save in {self.folder}: {error}", error=True)
            return
        self.saved = path
        self.app.notify(f"Saved {path}", title="Workflow saved")
        self.dismiss(path)

    def action_cancel(self) -> None:
        if self.planner is not None:
            self.planner.cancel()
        self.workers.cancel_group(self, "plan-draft")
        self.dismiss(None)


async def open_planner(app: App[Any], core: Core, folder: Path, *, goal: str = "") -> Path | None:
    """Show the planner and wait for its answer: the saved workflow's path, or None.

    Call it from a worker (``push_screen_wait`` needs one); without a worker, push
    ``PlanDialog(...)`` with a callback instead.
    """
    return await app.push_screen_wait(PlanDialog(core, folder, goal=goal))
