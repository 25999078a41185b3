"""One line under the chat: model and backend, load progress, think mode, speed, context fill."""

from __future__ import annotations

from typing import Literal

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import Label, ProgressBar

ModelState = Literal["loading", "ready", "failed", "missing"]


class StatusBar(Horizontal):
    """Attributes down: the chat screen sets these reactives, the bar only renders them."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $panel;
        color: $text-muted;
        padding: 0 1;
        & > Label {
            width: auto;
            height: 1;
        }
        & > #sb-model {
            color: $text;
            text-style: bold;
            max-width: 50%;
            text-overflow: ellipsis;
            text-wrap: nowrap;
        }
        & > #sb-state {
            width: 1fr;
            padding: 0 0 0 1;
            text-overflow: ellipsis;
            text-wrap: nowrap;
        }
        & > ProgressBar {
            width: 16;
            height: 1;
            display: none;
            & > Bar {
                width: 10;
            }
        }
        &.-loading > ProgressBar {
            display: block;
        }
        &.-loading > #sb-model {
            max-width: 30%;
        }
        &.-loading > #sb-state {
            width: auto;
            max-width: 32;
            color: $warning;
        }
        /* While loading there is no speed or context to show; the progress bar needs the room. */
        &.-loading > #sb-speed, &.-loading > #sb-context, &.-loading > .sep {
            display: none;
        }
        &.-failed > #sb-state, &.-missing > #sb-state {
            color: $error;
            text-style: bold;
        }
        & > #sb-fill {
            width: 1fr;
        }
        /* Ready, the model's name takes what the figures on the right leave, and is cut short
           itself rather than pushing them off the edge of a narrow terminal. */
        &.-ready > #sb-model {
            width: 1fr;
            max-width: 100%;
            padding-right: 1;
        }
        &.-ready > #sb-state, &.-ready > #sb-fill {
            display: none;
        }
        & > #sb-think.-on {
            color: $accent;
            text-style: bold;
        }
        & > .sep {
            color: $text-disabled;
        }
        & > #sb-approvals {
            display: none;
            color: $warning;
            text-style: bold reverse;
            padding: 0 1;
            margin: 0 1 0 0;
        }
        &.-approvals > #sb-approvals {
            display: block;
        }
        & > #sb-server {
            display: none;
            color: $text-accent;
            margin: 0 1 0 0;
            text-wrap: nowrap;
        }
        &.-server > #sb-server {
            display: block;
        }
        &.-server-down > #sb-server {
            color: $warning;
            text-style: bold;
        }
    }
    """

    model_name: reactive[str] = reactive("")
    backend_name: reactive[str] = reactive("")
    state: reactive[ModelState] = reactive("loading")
    message: reactive[str] = reactive("")
    """Load progress text while loading; the reason when the model failed or is missing."""
    load_fraction: reactive[float] = reactive(0.0)
    think: reactive[bool] = reactive(False)
    tok_s: reactive[float | None] = reactive(None)
    context_used: reactive[int | None] = reactive(None)
    context_size: reactive[int | None] = reactive(None)
    approvals: reactive[int] = reactive(0)
    """Tool calls waiting for the user's answer."""
    server: reactive[str] = reactive("")
    """Attached to ``smoltui serve``: which one, or that it is reconnecting (empty in-process)."""
    approvals_key: reactive[str] = reactive("")
    """The key that selects the call that has waited longest (ctrl+g), shown beside the count: a
    card never takes the focus by itself, so the bar says how to reach it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Attributes, not queries: events may still arrive while the screen is being torn down.
        self._model_label = Label(id="sb-model", markup=False)
        self._state_label = Label(id="sb-state", markup=False)
        self.progress = ProgressBar(total=1.0, show_eta=False, id="sb-progress")
        self._think_label = Label(id="sb-think")
        self._speed_label = Label(id="sb-speed")
        self._context_label = Label(id="sb-context")
        self._approvals_label = Label(id="sb-approvals")
        self._server_label = Label(id="sb-server", markup=False)

    def compose(self) -> ComposeResult:
        yield self._model_label
        yield self._state_label
        yield self.progress
        yield Label(id="sb-fill")
        yield self._server_label
        yield self._approvals_label
        yield self._think_label
        yield Label(" │ ", classes="sep")
        yield self._speed_label
        yield Label(" │ ", classes="sep")
        yield self._context_label

    def on_mount(self) -> None:
        self._render_all()

    def _watch_any(self) -> None:
        if self.is_mounted:
            self._render_all()

    watch_model_name = watch_backend_name = watch_state = watch_message = _watch_any
    watch_load_fraction = watch_think = watch_tok_s = watch_context_used = watch_context_size = _watch_any
    watch_approvals = watch_approvals_key = watch_server = _watch_any

    @property
    def state_text(self) -> str:
        """What the model part of the bar says, for tests and screen readers alike."""
        match self.state:
            case "loading":
                return self.message or "loading the model…"
            case "ready":
                return ""
            case "failed":
                return f"✖ model failed: {self.message}"
            case "missing":
                return f"✖ no model: {self.message}"

    def _render_all(self) -> None:
        for state in ("loading", "ready", "failed", "missing"):
            self.set_class(self.state == state, f"-{state}")
        backend = (
            f" ({self.backend_name})" if self.backend_name and self.backend_name != self.model_name else ""
        )
        self._model_label.update(f"{self.model_name}{backend}")
        self._state_label.update(self.state_text)
        self.progress.update(progress=self.load_fraction)
        self._think_label.update("think on" if self.think else "think off")
        self._think_label.set_class(self.think, "-on")
        self._speed_label.update("— tok/s" if self.tok_s is None else f"{self.tok_s:.1f} tok/s")
        self._context_label.update(self._context_text())
        self.set_class(bool(self.server), "-server")
        self.set_class("reconnecting" in self.server, "-server-down")
        self._server_label.update(f"⇄ {self.server}" if self.server else "")
        self.set_class(self.approvals > 0, "-approvals")
        key = f" · {self.approvals_key}" if self.approvals_key else ""
        self._approvals_label.update(f"⚑ {self.approvals} waiting{key}" if self.approvals else "")

    def _context_text(self) -> str:
        if not self.context_size:
            return "ctx —"
        if self.context_used is None:
            return f"ctx —/{self.context_size}"
        percent = 100 * self.context_used / self.context_size
        return f"ctx {self.context_used}/{self.context_size} {percent:.0f}%"
