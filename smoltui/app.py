"""The Textual app: a front end over one core (:mod:`smoltui.core`).

:class:`SmolApp` receives a core ready-made, so tests hand it one with a scripted backend and a
store in a temporary folder. It owns what is app-wide: themes, the user's keymap, the command
palette and when the model starts loading. The chat itself lives in
:class:`smoltui.screens.chat.ChatScreen`; the workflow side in its panes and the run view.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.notifications import Notification
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen

from smoltui.config import Config, key_clashes
from smoltui.core import Core, Settings, open_core, setup_logging
from smoltui.errors import SmoltuiError, StoreError
from smoltui.orchestrator.events import (
    ApprovalNeeded,
    RunFinished,
    RunsChanged,
    RunStateChanged,
    ToolCallFinished,
)
from smoltui.orchestrator.store import Store
from smoltui.paths import Paths
from smoltui.screens.approval_card import ApprovalCard
from smoltui.screens.chat import ChatScreen
from smoltui.screens.dialogs import ConfirmDialog, QuitDialog, TextPromptDialog
from smoltui.screens.edit_arguments import EditArgumentsDialog
from smoltui.screens.launch_dialog import LaunchDialog
from smoltui.screens.log_pane import LogPane
from smoltui.screens.plan_dialog import PlanDialog
from smoltui.screens.preview import PreviewScreen
from smoltui.screens.prompt_input import PromptInput
from smoltui.screens.run_view import RunScreen
from smoltui.screens.search import SearchScreen
from smoltui.screens.themes import FALLBACK_THEME, bundled_theme_dirs, load_themes
from smoltui.screens.tool_call_view import ToolCallView
from smoltui.screens.tool_picker import ToolPickerDialog
from smoltui.screens.workflow_tree import WorkflowTree

log = logging.getLogger(__name__)


class SmolApp(App[int]):
    """Chat with a local model. Works without one too: history stays browsable."""

    TITLE = "smoltui"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True, show=False),
        Binding("f1", "toggle_keys", "Keys", id="app.keys", show=False),
        Binding("ctrl+g", "next_approval", "Approvals", id="approvals.next", priority=True, show=False),
        Binding("f9", "plan_workflow", "Plan", id="app.plan", show=False),
        # Textual adds this binding itself, without an id; declared here so [keymap] can move it.
        Binding(
            "ctrl+p",
            "command_palette",
            "palette",
            id="app.command_palette",
            priority=True,
            show=False,
            tooltip="Open the command palette",
        ),
    ]

    pending_approvals: reactive[int] = reactive(0)
    """Tool calls waiting for the user, across every run (the status bar shows the count)."""

    server_status: reactive[str] = reactive("")
    """Attached to a server: which one, or that its event stream is reconnecting (the status bar
    shows it); empty when the core is this process's own."""

    def __init__(
        self,
        core: Core,
        *,
        startup_errors: Sequence[str] = (),
        theme_dirs: Sequence[Path] | None = None,
        initial_session: int | None = None,
    ) -> None:
        """
        Args:
            core: everything the app shows and drives (a core whose model could not be resolved
                still shows history, and says why).
            startup_errors: problems to show as notifications once the app is up.
            theme_dirs: folders of theme files (default: the ones shipped with smoltui).
            initial_session: a saved chat to open at start instead of a new one.
        """
        super().__init__()
        self.core = core
        self._bus_unsubscribe: Any = None
        self._startup_errors = list(startup_errors)
        self._initial_session = initial_session
        self._reported_clashes: set[frozenset[str]] = set()
        self.interrupted_runs: list[str] = []
        """Runs found interrupted at start (offered for resuming in the command palette)."""
        # Themes and keymap are applied before the first frame, so nothing flashes or jumps.
        self._theme_problems = self._register_themes(
            bundled_theme_dirs() if theme_dirs is None else theme_dirs
        )
        self.set_keymap(core.config.keymap)
        if palette_keys := core.config.keymap.get("app.command_palette"):
            # The footer finds the palette's key through this attribute, not through the keymap.
            self.COMMAND_PALETTE_BINDING = palette_keys.split(",")[0].strip()

    @property
    def config(self) -> Config:
        return self.core.config

    @property
    def shown_notifications(self) -> list[Notification]:
        """The notifications on screen now, oldest first (each leaves when its timeout ends)."""
        return list(self._notifications)

    # -- set-up --------------------------------------------------------------------------------------

    def _register_themes(self, directories: Iterable[Path]) -> list[str]:
        themes, errors = load_themes(directories)
        problems = [str(error) for error in errors]
        for theme in themes:
            self.register_theme(theme)
        wanted = self.config.ui.theme
        if wanted in self.available_themes:
            self.theme = wanted
        else:
            problems.append(f"unknown theme {wanted!r}; using {FALLBACK_THEME}")
            self.theme = FALLBACK_THEME
        return problems

    def on_mount(self) -> None:
        # Pushed rather than returned from get_default_screen, which skips the screen's CSS_PATH.
        self.push_screen(ChatScreen(self.core, initial_session=self._initial_session))
        self._bus_unsubscribe = self.core.bus.subscribe(self._core_event)
        self._follow_server()
        self.recount_approvals()  # attached, calls may be waiting already (the server's)
        unknown = sorted(set(self.config.keymap) - known_binding_ids())
        if unknown:
            self.notify(
                f"unknown binding id(s) in [keymap]: {', '.join(unknown)}; "
                f"known ids: {', '.join(sorted(known_binding_ids()))}",
                title="Keymap",
                severity="warning",
                timeout=12,
            )
        for clash in key_clashes(self.config.keymap, binding_table(), everywhere=(type(self).__name__,)):
            self.notify(str(clash), title="Keymap", severity="warning", timeout=12)
        for problem in self._theme_problems:
            self.notify(problem, title="Theme", severity="warning", timeout=10)
        for problem in self._startup_errors:
            self.notify(problem, severity="warning", timeout=12)
        if not self.core.model.available:
            self.notify(self.core.model.load_error or "no model could be found", title="No model",
                        severity="error", timeout=15)
        else:
            # After the first frame: the window is up (and typing works) while the weights load.
            self.call_after_refresh(self._load_model)
        self.call_after_refresh(self._start_tools)
        self.core.watcher.start()
        self._tell_interrupted()

    @property
    def attached(self) -> bool:
        """The core is a running server's (``smoltui serve``), not this process's own."""
        return bool(getattr(self.core, "attached", False))

    def _follow_server(self) -> None:
        """Attached: the status bar names the server and says when its stream is reconnecting; a
        command the server refused in the background (an answer, a cancel) is told."""
        if not self.attached:
            return
        core: Any = self.core
        attachment = core.attachment

        def state(now: str) -> None:
            self.server_status = core.where if now == "connected" else "server unreachable: reconnecting…"

        def problem(text: str) -> None:
            self.notify(text, title="smoltui serve", severity="error", timeout=10)

        attachment.on_state = state
        attachment.on_problem = problem
        state(attachment.state)

    @work(group="model", exclusive=True)
    async def _load_model(self) -> None:
        # Failures arrive as a ModelFailed event, which the chat screen shows.
        await self.core.model.load()

    @work(group="tools", exclusive=True)
    async def _start_tools(self) -> None:
        """MCP servers start in the background; their tools reach every picker and check as they come."""
        for problem in await self.core.start_tools():
            self.notify(problem, title="MCP", severity="warning", timeout=12)

    @work(group="interrupted", exclusive=True)
    async def _tell_interrupted(self) -> None:
        """Runs whose process died mid-run (killed, crashed, the machine went down) are said once at
        start, with the way to go on; a notification, so the prompt keeps the focus."""
        try:
            self.interrupted_runs = await self.core.runs.interrupted()
        except SmoltuiError as error:  # a store that cannot be read says so elsewhere
            log.warning("could not look for interrupted runs: %s", error)
            return
        count = len(self.interrupted_runs)
        if count:
            key = self.get_key_display(Binding(self._binding_key("app.command_palette", "ctrl+p"), ""))
            self.notify(f"{count} run{'s were' if count > 1 else ' was'} interrupted: "
                        f"{', '.join(self.interrupted_runs[:3])}{' …' if count > 3 else ''}. "
                        f"{key} → “Resume interrupted runs” goes on with {'them' if count > 1 else 'it'}.",
                        title="Interrupted runs", severity="warning", timeout=15)

    def action_resume_interrupted(self) -> None:
        self._resume_interrupted()

    @work(group="interrupted", exclusive=True)
    async def _resume_interrupted(self) -> None:
        resumed = []
        for run_id in self.interrupted_runs:
            try:
                await self.core.runs.resume(run_id)
            except SmoltuiError as error:  # driven elsewhere meanwhile, its file gone, ...
                self.notify(str(error), title="Cannot resume", severity="error", timeout=10)
            else:
                resumed.append(run_id)
        self.interrupted_runs = []
        if resumed:
            self.notify(f"resumed {', '.join(resumed)}", title="Interrupted runs")

    async def on_unmount(self) -> None:
        if self._bus_unsubscribe is not None:
            self._bus_unsubscribe()
            self._bus_unsubscribe = None
        await self.core.watcher.stop()

    def handle_bindings_clash(self, clashed_bindings: set[Binding], node: DOMNode) -> None:
        # Textual calls this on every key press while the clash stands: say it once.
        clash = frozenset(binding.id or binding.action for binding in clashed_bindings)
        if clash in self._reported_clashes:
            return
        self._reported_clashes.add(clash)
        keys = ", ".join(sorted({binding.key for binding in clashed_bindings}))
        self.notify(
            f"[keymap] puts {', '.join(sorted(clash))} on the same key ({keys}); only one of them works",
            title="Keymap",
            severity="warning",
            timeout=12,
        )

    # -- approvals ------------------------------------------------------------------------------------

    def _core_event(self, event: object) -> None:
        if isinstance(event, ApprovalNeeded | ToolCallFinished):
            self.call_later(self._approval_event, event)
        elif isinstance(event, RunStateChanged | RunFinished | RunsChanged):
            # A cancelled run takes its waiting calls with it, with no answer to announce it.
            self.call_later(self.recount_approvals)

    def recount_approvals(self) -> None:
        """Count the calls waiting for an answer again (one can stop waiting unanswered, when its
        reply or run is cancelled)."""
        self.pending_approvals = len(self.core.gate.waiting())

    def _approval_event(self, event: ApprovalNeeded | ToolCallFinished) -> None:
        self.recount_approvals()
        if not isinstance(event, ApprovalNeeded):
            return
        call = event.call
        screen = self.screen
        # Where the call shows up inline, its card rings the bell itself.
        if call.run_id and not (isinstance(screen, RunScreen) and screen.run_id == call.run_id):
            self.bell()
            key = self.get_key_display(Binding(self._binding_key("approvals.next", "ctrl+g"), ""))
            self.notify(f"`{call.tool}` in task {call.task_id} of run {call.run_id} waits for you; "
                        f"{key} opens it", title="Approval needed", severity="warning", timeout=8)

    def _binding_key(self, binding_id: str, default: str) -> str:
        return self.config.keymap.get(binding_id, default).split(",")[0].strip()

    def action_next_approval(self) -> None:
        """Select the card of the call that has waited longest (opening its chat or run); pressed on
        a card, the card of the call that has waited next longest. The order is the gate's (when
        each call asked), never where the cards happen to sit."""
        waiting = self.core.gate.waiting()
        if not waiting:
            self.notify("no tool call is waiting for approval")
            return
        screen = self.screen
        if isinstance(screen, ModalScreen):
            # A dialog is open (a form, the edit of another call): it keeps the keys until closed.
            key = self.get_key_display(Binding(self._binding_key("approvals.next", "ctrl+g"), ""))
            self.notify(f"close this dialog first; then {key} selects the waiting call", severity="warning")
            return
        ids = [request.call.id for request in waiting]
        focused = self.focused
        index = 0
        if isinstance(focused, ApprovalCard) and focused.call_id in ids:
            index = (ids.index(focused.call_id) + 1) % len(ids)
        call = waiting[index].call
        run_id = call.run_id
        if run_id is None and call.session_id is not None:
            # A chat's call: its card sits in that chat, under the call.
            if isinstance(screen, RunScreen):
                self.pop_screen()  # back to the chat (the stack is popped at once)
                screen = self.screen
            if isinstance(screen, ChatScreen):
                screen.show_approval(call.session_id, call.id)
            return
        if run_id is None:
            return
        if isinstance(screen, RunScreen) and screen.run_id == run_id:
            screen.focus_card(call.id)
            return
        if isinstance(screen, RunScreen):
            self.pop_screen()  # one run view at a time, not a stack of them
        self.push_screen(RunScreen(self.core, run_id, focus_call=call.id))

    # -- quitting -------------------------------------------------------------------------------------

    def active_runs(self) -> list[str]:
        """Runs this process drives now (quitting cancels them)."""
        runs = self.core.runs
        return [run_id for run_id in list(runs.active) if runs.is_running(run_id)]

    async def action_quit(self) -> None:
        """Quit at once, unless runs are in progress: then ask (cancel them and quit, or stay).
        ctrl+q and the palette's Quit both come here."""
        if not self.active_runs():
            self.exit()
            return
        if not any(isinstance(screen, QuitDialog) for screen in self.screen_stack):
            self._ask_quit()

    @work(group="quit", exclusive=True)
    async def _ask_quit(self) -> None:
        running = self.active_runs()
        if not running:
            self.exit()
            return
        count = len(running)
        question = (f"{count} run{'s' if count != 1 else ''} in progress ({', '.join(running)}). "
                    "Quitting cancels them (u resumes a cancelled run later).")
        if not await self.push_screen_wait(QuitDialog(question, confirm_label=f"Cancel {'them' if count != 1 else 'it'} and quit",
                                                      cancel_label="Stay")):
            return
        await self.core.runs.shutdown()  # recorded as cancelled, resumable, before the app goes
        self.exit()

    # -- commands --------------------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        if isinstance(screen, ChatScreen):
            yield from screen.system_commands()
        if self.check_action("plan_workflow", ()):
            key = self.get_key_display(Binding(self._binding_key("app.plan", "f9"), ""))
            yield SystemCommand("Plan a workflow", f"Draft a workflow from a goal with the model, review it, save it ({key})",
                                self.action_plan_workflow)
        if self.interrupted_runs:
            yield SystemCommand("Resume interrupted runs", f"Go on with {', '.join(self.interrupted_runs)}",
                                self.action_resume_interrupted)
        yield from super().get_system_commands(screen)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "plan_workflow":
            # Attached, the model is the server's: the planner does not drive it from here (yet).
            return self.core.model.available and not self.attached
        return True

    def action_plan_workflow(self) -> None:
        self._plan()

    @work(group="planner")
    async def _plan(self) -> None:
        """The planner drafts into the user's workflow folder; the tree picks the file up by itself."""
        from smoltui.screens.plan_dialog import open_planner

        if not self.core.model.available:
            return
        await open_planner(self, self.core, self.core.workflow_folder())

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()


def binding_table() -> dict[str, tuple[str, str]]:
    """Every binding id a user can remap in ``[keymap]`` -> (where it is active, its default keys)."""
    owners = (SmolApp, ChatScreen, PromptInput, SearchScreen, TextPromptDialog, ConfirmDialog, RunScreen, PreviewScreen,
              LaunchDialog, WorkflowTree, LogPane, ApprovalCard, EditArgumentsDialog, ToolPickerDialog, PlanDialog,
              ToolCallView)
    return {b.id: (owner.__name__, b.key) for owner in owners for b in owner.BINDINGS
            if isinstance(b, Binding) and b.id}


def known_binding_ids() -> set[str]:
    """Every binding id a user can remap in ``[keymap]``."""
    return set(binding_table())


async def open_store(paths: Paths) -> tuple[Store, Path | None, str | None]:
    """The user's store, or a throwaway one when the data directory cannot be used.

    Returns the store, the temporary folder to delete afterwards (if any), and why history will
    not be kept (if so).
    """
    try:
        return await Store.open(paths.database), None, None
    except StoreError as error:
        reason = str(error)
    # A file in a fresh temporary folder rather than ":memory:": the store insists on WAL mode,
    # which an in-memory database cannot use.
    scratch = Path(tempfile.mkdtemp(prefix="smoltui-"))
    try:
        return await Store.open(scratch / "smoltui.db"), scratch, reason
    except StoreError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


async def attach_to_server(settings: Settings, problems: list[str]) -> Any | None:
    """The core of the server running for this home (``smoltui serve``), or None: no server runs,
    ``SMOLTUI_LOCAL=1`` (``--local``) asks for this process's own core, or the server does not
    answer (said in ``problems``; the app then runs in-process as it does without a server)."""
    if os.environ.get("SMOLTUI_LOCAL", "").strip() not in ("", "0"):
        return None
    from smoltui.server.locations import running_pid

    try:
        if running_pid(settings.paths) is None:  # the cheap check first: no HTTP client is imported
            return None
    except OSError:  # a data folder that cannot be used: no server could run there either
        return None
    from smoltui.server.attached import open_attached
    from smoltui.server.client import ServerClient

    client = ServerClient.for_home(settings.paths)
    if client is None:
        return None
    try:
        core = await open_attached(settings, client)
    except (SmoltuiError, TimeoutError) as error:
        await client.aclose()
        problems.append(f"a smoltui server runs for this home but did not answer ({error}); "
                        "running in this process instead")
        return None
    if settings.model_spec and settings.model_spec not in (core.model.label, getattr(core.model.backend, "model_name", None)):
        problems.append(f"--model {settings.model_spec} is not used: attached to smoltui serve, which answers with "
                        f"{core.model.label} (SMOLTUI_LOCAL=1 runs smoltui in this process)")
    if settings.log_to_file:
        setup_logging(settings.paths)
    return core


async def run_app(settings: Settings, *, startup_errors: Sequence[str] = ()) -> int:
    """Run the app over the home's server when one runs (attached: its replies and runs go on
    when the app closes), else over a core built in this process; close the core; returns the exit
    status."""
    problems = list(startup_errors)
    scratch: Path | None = None
    core: Any = await attach_to_server(settings, problems)
    if core is None:
        store, scratch, store_problem = await open_store(settings.paths)
        if store_problem:
            problems.append(f"history will not be saved: {store_problem}")
        core = await open_core(settings, store=store)
    received: list[signal.Signals] = []
    loop = asyncio.get_running_loop()
    before_hup: Any = None
    try:
        app = SmolApp(core, startup_errors=problems,
                      theme_dirs=[*bundled_theme_dirs(), settings.paths.config_dir / "themes"])
        # SIGTERM, SIGHUP (the terminal closed) and SIGINT quit like the quit key: the terminal is
        # restored, and core.close() keeps what a streaming reply has said, marked cut off (attached:
        # the reply and the runs are the server's, and go on).
        for sig in LOOP_SIGNALS:
            loop.add_signal_handler(sig, lambda sig=sig: (received.append(sig), app.exit()))

        def hung_up(signum: int, frame: object) -> None:
            # A plain handler, not the loop's: it runs even while the loop is stuck writing to
            # the terminal that just went away.
            received.append(signal.SIGHUP)
            _terminal_gone()
            loop.call_soon_threadsafe(app.exit)

        before_hup = signal.signal(signal.SIGHUP, hung_up)
        await app.run_async()
    finally:
        try:
            await core.close()
        finally:
            for sig in LOOP_SIGNALS:
                loop.remove_signal_handler(sig)
            if before_hup is not None:
                signal.signal(signal.SIGHUP, before_hup)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    return 128 + received[0] if received else 0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
LOOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""Handled by the loop; SIGHUP has a plain handler (see run_app)."""


HANGUP_GRACE_S = 5.0
"""After SIGHUP, the process ends within this long even if the app cannot finish on its own."""


def _terminal_gone() -> None:
    """SIGHUP: the terminal is closing, or gone. Gone, a write to it fails, Textual's writer
    thread ends, and the app would wait for it forever (its queue full) instead of exiting: so the
    process ends after a grace period whatever happens. What it drives is safe by then: a reply is
    saved as it streams, a run's lease lapses and the run is resumable; attached, both are the
    server's and go on."""
    timer = threading.Timer(HANGUP_GRACE_S, os._exit, (128 + signal.SIGHUP,))
    timer.daemon = True
    timer.start()
