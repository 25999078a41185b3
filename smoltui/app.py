"""The composition root of the TUI: builds the store and the chat service, runs the Textual app.

:class:`SmolApp` receives its pieces ready-made (a :class:`ChatService`, a :class:`Store`, the
:class:`Config`), so tests hand it a scripted backend and a store in a temporary folder. It owns what
is app-wide: themes, the user's keymap, the command palette and the model's lifetime. The chat
itself lives in :class:`smoltui.screens.chat.ChatScreen`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.reactive import reactive
from textual.screen import Screen

from smoltui.config import Config
from smoltui.errors import SmoltuiError, StoreError
from smoltui.orchestrator.approval import ApprovalNeeded, ToolCallFinished
from smoltui.orchestrator.chat import ChatService
from smoltui.orchestrator.run_manager import RunFinished
from smoltui.orchestrator.scheduler import RunStateChanged
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workbench import Workbench
from smoltui.paths import Paths
from smoltui.screens.approval_card import ApprovalCard
from smoltui.screens.chat import ChatScreen
from smoltui.screens.dialogs import ConfirmDialog, TextPromptDialog
from smoltui.screens.edit_arguments import EditArgumentsDialog
from smoltui.screens.launch_dialog import LaunchDialog
from smoltui.screens.log_pane import LogPane
from smoltui.screens.plan_dialog import PlanDialog
from smoltui.screens.prompt_input import PromptInput
from smoltui.screens.run_view import RunScreen
from smoltui.screens.search import SearchScreen
from smoltui.screens.themes import FALLBACK_THEME, bundled_theme_dirs, load_themes
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

    def __init__(
        self,
        service: ChatService | None,
        store: Store,
        config: Config,
        *,
        model_label: str,
        startup_errors: Sequence[str] = (),
        model_error: str | None = None,
        exports_dir: Path | None = None,
        theme_dirs: Sequence[Path] | None = None,
        initial_session: int | None = None,
        workbench: Workbench | None = None,
    ) -> None:
        """
        Args:
            service: the chat service, or None when no model could even be resolved.
            startup_errors: problems to show as notifications once the app is up.
            model_error: why there is no service; shown in the status bar and as a notification.
            exports_dir: where exported chats go (default: ``exports`` beside the database).
            theme_dirs: folders of theme files (default: the ones shipped with smoltui).
            initial_session: a saved chat to open at start instead of a new one.
            workbench: workflows and their runs (the tree, the run view, the log pane); None hides them.
        """
        super().__init__()
        self.workbench = workbench
        if workbench is not None and service is not None and service.gate is None:
            service.gate = workbench.gate  # one gate: chat calls and workflow calls ask the same way
        self._workbench_unsubscribe = None
        self.service = service
        self.store = store
        self.config = config
        self.model_label = model_label
        self._startup_errors = list(startup_errors)
        self._model_error = model_error
        self.exports_dir = exports_dir or Path(store.path).parent / "exports"
        self._initial_session = initial_session
        self._reported_clashes: set[frozenset[str]] = set()
        # Themes and keymap are applied before the first frame, so nothing flashes or jumps.
        self._theme_problems = self._register_themes(
            bundled_theme_dirs() if theme_dirs is None else theme_dirs
        )
        self.set_keymap(config.keymap)
        if palette_keys := config.keymap.get("app.command_palette"):
            # The footer finds the palette's key through this attribute, not through the keymap.
            self.COMMAND_PALETTE_BINDING = palette_keys.split(",")[0].strip()

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

    def _chat_screen(self) -> ChatScreen:
        service = self.service
        return ChatScreen(
            service,
            self.store,
            model_label=self.model_label,
            exports_dir=self.exports_dir,
            model_error=self._model_error,
            keymap=self.config.keymap,
            think=service.settings.params.think if service is not None else self.config.chat.think,
            initial_session=self._initial_session,
            workbench=self.workbench,
        )

    def on_mount(self) -> None:
        # Pushed rather than returned from get_default_screen, which skips the screen's CSS_PATH.
        self.push_screen(self._chat_screen())
        if self.workbench is not None:
            self._workbench_unsubscribe = self.workbench.bus.subscribe(self._workbench_event)
        unknown = sorted(set(self.config.keymap) - known_binding_ids())
        if unknown:
            self.notify(
                f"unknown binding id(s) in [keymap]: {', '.join(unknown)}; "
                f"known ids: {', '.join(sorted(known_binding_ids()))}",
                title="Keymap",
                severity="warning",
                timeout=12,
            )
        for problem in self._theme_problems:
            self.notify(problem, title="Theme", severity="warning", timeout=10)
        for problem in self._startup_errors:
            self.notify(problem, severity="warning", timeout=12)
        if self.service is None:
            self.notify(
                self._model_error or "no model could be found", title="No model", severity="error", timeout=15
            )
        else:
            # After the first frame: the window is up (and typing works) while the weights load.
            self.call_after_refresh(self._load_model)

    @work(group="model", exclusive=True)
    async def _load_model(self) -> None:
        assert self.service is not None
        # Failures arrive as a ModelFailed event, which the chat screen shows.
        await self.service.load_model()

    async def on_unmount(self) -> None:
        if self._workbench_unsubscribe is not None:
            self._workbench_unsubscribe()
        if self.workbench is not None:
            # Runs of this process are marked cancelled (resumable), not left "running".
            await self.workbench.manager.shutdown()
        if self.service is None:
            return
        self.service.cancel()
        try:
            await self.service.backend.close()
        except Exception:  # closing must not turn a clean exit into a traceback
            log.exception("closing the backend failed")

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

    def _workbench_event(self, event: object) -> None:
        if isinstance(event, ApprovalNeeded | ToolCallFinished):
            self.call_later(self._approval_event, event)
        elif isinstance(event, RunStateChanged | RunFinished):
            # A cancelled run takes its waiting calls with it, with no answer to announce it.
            self.call_later(self.recount_approvals)

    def recount_approvals(self) -> None:
        """Count the calls waiting for an answer again (one can stop waiting unanswered, when its
        reply or run is cancelled)."""
        if self.workbench is not None:
            self.pending_approvals = len(self.workbench.pending_for())

    def _approval_event(self, event: ApprovalNeeded | ToolCallFinished) -> None:
        assert self.workbench is not None
        self.recount_approvals()
        if not isinstance(event, ApprovalNeeded):
            return
        call = event.pending.call
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
        """Open the run whose tool call has waited longest (or move to its card)."""
        if self.workbench is None:
            return
        waiting = self.workbench.pending_for()
        if not waiting:
            self.notify("no tool call is waiting for approval")
            return
        call = waiting[0].call
        run_id = call.run_id
        screen = self.screen
        if run_id is None and call.session_id is not None:
            # A chat's call: its card sits in that chat, under the call.
            if isinstance(screen, RunScreen):
                self.pop_screen()  # back to the chat (the stack is popped at once)
                screen = self.screen
            if isinstance(screen, ChatScreen):
                screen.show_approval(call.session_id, call.id)
            return
        if isinstance(screen, RunScreen) and screen.run_id == run_id:
            screen.action_next_approval()
        elif run_id is not None:
            self.push_screen(RunScreen(self.workbench, run_id))

    # -- commands --------------------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        if isinstance(screen, ChatScreen):
            yield from screen.system_commands()
        if self.check_action("plan_workflow", ()):
            key = self.get_key_display(Binding(self._binding_key("app.plan", "f9"), ""))
            yield SystemCommand("Plan a workflow", f"Draft a workflow from a goal with the model, review it, save it ({key})",
                                self.action_plan_workflow)
        yield from super().get_system_commands(screen)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "plan_workflow":
            return self.service is not None and self.workbench is not None
        if action == "next_approval":
            return self.workbench is not None
        return True

    def action_plan_workflow(self) -> None:
        self._plan()

    @work(group="planner")
    async def _plan(self) -> None:
        """The planner drafts into the user's workflow folder; the tree picks the file up by itself."""
        from smoltui.screens.plan_dialog import open_planner

        if self.service is None or self.workbench is None:
            return
        folders = self.workbench.catalog.folders
        folder = next((f.path for f in folders if f.label == "mine"), folders[0].path if folders else Path.cwd())
        await open_planner(self, self.service.loaded_backend, self.workbench.catalog.tools, folder)

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()


def known_binding_ids() -> set[str]:
    """Every binding id a user can remap in ``[keymap]``."""
    owners = (SmolApp, ChatScreen, PromptInput, SearchScreen, TextPromptDialog, ConfirmDialog, RunScreen,
              LaunchDialog, WorkflowTree, LogPane, ApprovalCard, EditArgumentsDialog, ToolPickerDialog, PlanDialog)
    return {b.id for owner in owners for b in owner.BINDINGS if isinstance(b, Binding) and b.id}


def open_store(paths: Paths) -> tuple[Store, Path | None, str | None]:
    """The user's store, or a throwaway one when the data directory cannot be used.

    Returns the store, the temporary folder to delete afterwards (if any), and why history will
    not be kept (if so).
    """
    try:
        return Store.open(paths.database), None, None
    except StoreError as error:
        reason = str(error)
    # A file in a fresh temporary folder rather than ":memory:": the store insists on WAL mode,
    # which an in-memory database cannot use.
    scratch = Path(tempfile.mkdtemp(prefix="smoltui-"))
    try:
        return Store.open(scratch / "smoltui.db"), scratch, reason
    except StoreError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def run_tui(
    config: Config, paths: Paths, model_spec: str | None = None, startup_errors: Sequence[str] = ()
) -> int:
    """Open the chat app; returns the exit status."""
    from smoltui.cli import chat_settings, resolve_and_build, setup_logging

    setup_logging(paths)
    store, scratch, store_problem = open_store(paths)
    problems = list(startup_errors)
    if store_problem:
        problems.append(f"history will not be saved: {store_problem}")
    service: ChatService | None = None
    model_error: str | None = None
    model_label = model_spec or config.model.default or "bundled model"
    try:
        ref, backend = resolve_and_build(config, paths, model_spec)
    except SmoltuiError as error:
        model_error = str(error)
    except ImportError as error:
        # A backend whose runtime is not installed (e.g. llama-cpp-python): keep history usable.
        log.exception("building the backend failed")
        model_error = f"the model runtime is not installed: {error}; install smoltui[cpu]"
    else:
        model_label = ref.label
        workspace = Path(config.tools.workspace).expanduser() if config.tools.workspace else Path.cwd()
        service = ChatService(backend, store, chat_settings(config), workspace=workspace)
    workbench = build_workbench(config, paths, store, service)
    try:
        app = SmolApp(
            service,
            store,
            config,
            model_label=model_label,
            startup_errors=problems,
            model_error=model_error,
            exports_dir=paths.exports_dir,
            theme_dirs=[*bundled_theme_dirs(), paths.config_dir / "themes"],
            workbench=workbench,
        )
        app.run()
    finally:
        store.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def build_workbench(config: Config, paths: Paths, store: Store, service: ChatService | None) -> Workbench:
    """Workflows for the TUI: the project's, the user's and the configured folders; one approval
    gate that asks in the run view; LLM tasks on the chat's model (loaded once, shared)."""
    from smoltui.cli import chat_settings, workflow_tools
    from smoltui.orchestrator.workflow_catalog import default_folders

    tools = workflow_tools(config)
    unknown = [name for name in config.approval.tools if name not in tools]
    if unknown:
        log.warning("[approval] names unknown tools: %s", ", ".join(unknown))
    return Workbench.build(
        store,
        tools=tools,
        policy=config.approval,
        folders=default_folders(Path.cwd(), paths.workflows_dir, config.workflows.paths),
        backend=service.loaded_backend if service is not None else None,
        params=chat_settings(config).params,
        approval_timeout_s=config.workflows.approval_timeout_s,
    )
