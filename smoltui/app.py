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
from textual.screen import Screen

from smoltui.config import Config
from smoltui.errors import SmoltuiError, StoreError
from smoltui.orchestrator.chat import ChatService
from smoltui.orchestrator.store import Store
from smoltui.paths import Paths
from smoltui.screens.chat import ChatScreen
from smoltui.screens.dialogs import ConfirmDialog, TextPromptDialog
from smoltui.screens.prompt_input import PromptInput
from smoltui.screens.search import SearchScreen
from smoltui.screens.themes import FALLBACK_THEME, bundled_theme_dirs, load_themes

log = logging.getLogger(__name__)


class SmolApp(App[int]):
    """Chat with a local model. Works without one too: history stays browsable."""

    TITLE = "smoltui"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True, show=False),
        Binding("f1", "toggle_keys", "Keys", id="app.keys", show=False),
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
    ) -> None:
        """
        Args:
            service: the chat service, or None when no model could even be resolved.
            startup_errors: problems to show as notifications once the app is up.
            model_error: why there is no service; shown in the status bar and as a notification.
            exports_dir: where exported chats go (default: ``exports`` beside the database).
            theme_dirs: folders of theme files (default: the ones shipped with smoltui).
            initial_session: a saved chat to open at start instead of a new one.
        """
        super().__init__()
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
        )

    def on_mount(self) -> None:
        # Pushed rather than returned from get_default_screen, which skips the screen's CSS_PATH.
        self.push_screen(self._chat_screen())
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

    # -- commands --------------------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        if isinstance(screen, ChatScreen):
            yield from screen.system_commands()
        yield from super().get_system_commands(screen)

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()


def known_binding_ids() -> set[str]:
    """Every binding id a user can remap in ``[keymap]``."""
    owners = (SmolApp, ChatScreen, PromptInput, SearchScreen, TextPromptDialog, ConfirmDialog)
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
        service = ChatService(backend, store, chat_settings(config))
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
        )
        app.run()
    finally:
        store.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0
