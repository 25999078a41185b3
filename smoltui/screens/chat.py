"""The chat screen: the conversation, the message box, the chat list and the status line.

Commands go down to :class:`ChatService` (send, cancel); events come back up through its bus and
are re-posted here as Textual messages, so every widget update happens in this screen's message
loop, in the order the orchestrator published them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from smoltui.core import Core
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.chat import ChatService, split_think_flag
from smoltui.orchestrator.events import (
    ApprovalNeeded,
    ContextTrimmed,
    Event,
    ModelFailed,
    ModelLoading,
    ModelReady,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ThinkingTokenDelta,
    TokenDelta,
    ToolCallDone,
    ToolCallFinished,
    ToolCallRequested,
    ToolStepLimit,
)
from smoltui.orchestrator.export import export_session
from smoltui.orchestrator.store import Session
from smoltui.orchestrator.transcript import Called, Entry, Said, load_transcript
from smoltui.screens.approval_card import ApprovalCard, card_for
from smoltui.screens.dialogs import ConfirmDialog, TextPromptDialog
from smoltui.screens.main_panes import LAYOUT_BINDINGS, WorkflowPanes
from smoltui.screens.message_view import MessageView
from smoltui.screens.prompt_input import PromptInput
from smoltui.screens.search import SearchScreen
from smoltui.screens.session_list import SessionList
from smoltui.screens.status_bar import StatusBar
from smoltui.screens.tool_call_view import ToolCallView
from smoltui.screens.tool_picker import ToolPickerDialog

log = logging.getLogger(__name__)

NEW_CHAT_TITLE = "New chat"
MAX_SHOWN_MESSAGES = 200
"""A resumed chat shows at most this many messages, so opening a long one stays quick."""


@dataclass(frozen=True)
class PaletteCommand:
    action: str
    binding_id: str | None
    title: str
    help: str


# Every action of the screen, as the command palette lists it.
PALETTE_COMMANDS = (
    PaletteCommand("send", "chat.send", "Send message", "Send what is in the message box"),
    PaletteCommand(
        "cancel_reply", "chat.cancel", "Stop reply", "Stop the reply being written; what arrived is kept"
    ),
    PaletteCommand(
        "toggle_think",
        "chat.think",
        "Toggle thinking",
        "Let the model reason in a Thinking block before answering (next messages)",
    ),
    PaletteCommand("copy_reply", "chat.copy", "Copy reply", "Copy the focused (or last) reply's Markdown"),
    PaletteCommand("export", "chat.export", "Export chat", "Write this chat to a Markdown file"),
    PaletteCommand("new_session", "sessions.new", "New chat", "Start a new, empty chat"),
    PaletteCommand(
        "rename_session",
        "sessions.rename",
        "Rename chat",
        "Rename this chat (or the one highlighted in the chat list)",
    ),
    PaletteCommand(
        "delete_session",
        "sessions.delete",
        "Delete chat",
        "Delete this chat (or the one highlighted in the chat list), after asking",
    ),
    PaletteCommand("toggle_sessions", "sessions.toggle", "Toggle chat list", "Show or hide the saved chats"),
    PaletteCommand("pick_tools", "chat.tools", "Tools for this chat",
                   "Choose the tools the model may call in this chat (each call still asks first)"),
    PaletteCommand(
        "search", "search.open", "Search chats", "Find words in every saved chat and open it there"
    ),
)


def title_from_prompt(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:59] + "…"


class ChatScreen(WorkflowPanes, Screen[None]):
    """The main screen: the chat in the centre, with the workflow tree and the run log beside it
    (see :class:`WorkflowPanes`)."""

    CSS_PATH = "chat.tcss"
    AUTO_FOCUS = "#prompt"
    # Below 110 columns the chat list starts hidden, so the conversation keeps its width.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    BINDINGS = [
        Binding("escape", "cancel_reply", "Stop", id="chat.cancel"),
        Binding("ctrl+t", "toggle_think", "Think", id="chat.think"),
        Binding("ctrl+b", "toggle_sessions", "Chats", id="sessions.toggle"),
        Binding("ctrl+f", "search", "Search", id="search.open"),
        Binding("ctrl+n", "new_session", "New", id="sessions.new"),
        Binding("f5", "pick_tools", "Tools", id="chat.tools"),
        Binding("ctrl+o", "copy_reply", "Copy reply", id="chat.copy", show=False),
        Binding("ctrl+s", "export", "Export", id="chat.export", show=False),
        Binding("f2", "rename_session", "Rename chat", id="sessions.rename", show=False),
        Binding("f8", "delete_session", "Delete chat", id="sessions.delete", show=False),
        *LAYOUT_BINDINGS,
    ]

    think: reactive[bool] = reactive(False, init=False)
    """Think mode for the next messages (a /think or /no_think flag in a message still wins)."""

    class BusEvent(Message):
        """An orchestrator event, re-posted so it is handled in this screen's message order."""

        def __init__(self, event: Event) -> None:
            super().__init__()
            self.event = event

    def __init__(self, core: Core, *, initial_session: int | None = None) -> None:
        super().__init__()
        self._init_panes(core)
        self._service: ChatService | None = core.chat if core.model.available else None
        self._store = core.store
        self._model_label = core.model.label
        self._exports_dir = core.paths.exports_dir
        self._model_error = core.model.load_error
        self._keymap = dict(core.config.keymap)
        self._initial_session = initial_session
        think = core.chat.settings.params.think
        self.set_reactive(ChatScreen.think, think)
        self.session: Session | None = None
        self._live: MessageView | None = None
        """The assistant view a reply is streaming into, when that reply belongs to this chat."""
        self._pending_user: MessageView | None = None
        self._pending_text = ""
        self._replying = False
        """True from the moment a message is submitted until its reply ends (or is withdrawn)."""
        self._reply_session: int | None = None
        """The session whose reply is running (it may no longer be the one on screen)."""
        self._reply_started = False
        self._sessions_pinned: bool | None = None
        self.session_tools: list[str] = []
        """Tools the model may call in this chat."""
        self._call_views: dict[str, ToolCallView] = {}
        self._chat_cards: dict[str, ApprovalCard] = {}
        self._unsubscribe: Callable[[], None] | None = None
        # Kept as attributes rather than queried: workers may still touch them while the screen
        # is being torn down, when a query would no longer find them.
        self.session_list = SessionList(id="sessions")
        self.title_label = Label(NEW_CHAT_TITLE, id="chat-title", markup=False)
        self.log_view = VerticalScroll(id="log")
        self.prompt = PromptInput(id="prompt")
        self.status = StatusBar(id="status")

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            if self.workflow_tree is not None:
                yield self.workflow_tree
            yield self.session_list
            with Vertical(id="chat"):
                yield self.title_label
                yield self.log_view
                yield self.prompt
        if self.log_pane is not None:
            yield self.log_pane
        yield self.status
        yield Footer()

    @property
    def session_id(self) -> int | None:
        return self.session.id if self.session is not None else None

    def message_views(self) -> list[MessageView]:
        return list(self.log_view.query(MessageView).results(MessageView))

    async def on_mount(self) -> None:
        self.prompt.placeholder = f"Message · {self._key('chat.send', 'enter')} sends · {self._key('chat.newline', 'ctrl+j')} new line"
        status = self.status
        status.model_name = self._model_label
        status.think = self.think
        service = self._service
        if service is None:
            status.state = "missing"
            status.message = self._model_error or "no model could be found"
        else:
            status.backend_name = service.backend.name
            self._unsubscribe = service.bus.subscribe(lambda event: self.post_message(self.BusEvent(event)))
            # The load may have begun (or ended) before this screen subscribed.
            if service.ready.is_set():
                status.state = "ready"
                status.context_size = service.backend.context_size
            elif service.load_error:
                status.state = "failed"
                status.message = service.load_error
        self.log_view.anchor()
        self._mount_panes()
        if hasattr(self.app, "pending_approvals"):
            self.watch(self.app, "pending_approvals", lambda count: setattr(self.status, "approvals", count))
        if hasattr(self.app, "server_status"):
            # Attached to smoltui serve: the bar names it, and says when it is reconnecting.
            self.watch(self.app, "server_status", lambda text: setattr(self.status, "server", text))
            status.approvals_key = self._key("approvals.next", "ctrl+g")
        self._show_welcome()
        self._refresh_sessions()
        if self._initial_session is not None:
            self._open_session(self._initial_session)

    def on_unmount(self) -> None:
        self._unmount_panes()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _key(self, binding_id: str, default: str) -> str:
        """The key a binding is on, after the user's keymap, as the footer would show it."""
        key = self._keymap.get(binding_id, default).split(",")[0].strip()
        return self.app.get_key_display(Binding(key, "")) if self.is_attached else key

    def _show_welcome(self) -> None:
        k = self._key
        text = (
            "Type a message and press "
            f"{k('chat.send', 'enter')}. {k('chat.newline', 'ctrl+j')} starts a new line, "
            f"{k('chat.think', 'ctrl+t')} toggles thinking, {k('chat.cancel', 'escape')} stops a reply.\n"
            f"{k('sessions.toggle', 'ctrl+b')} shows your chats, {k('search.open', 'ctrl+f')} searches them, "
            f"{k('sessions.new', 'ctrl+n')} starts a new one; {k('app.command_palette', 'ctrl+p')} lists every command."
        )
        if self.core is not None:
            text += (f"\n{k('chat.tools', 'f5')} picks tools the model may call here; "
                     f"{k('layout.workflows', 'f3')} shows your workflows (enter runs one), "
                     f"{k('layout.logs', 'f4')} the run log; {k('approvals.next', 'ctrl+g')} opens a waiting approval.")
        self.log_view.mount(Static(text, classes="welcome", markup=False))

    # -- actions: state checks -------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        pane = self.check_pane_action(action)
        if pane is not None:
            return pane
        if action == "cancel_reply":
            return self.replying
        if action == "copy_reply":
            return self._copy_target() is not None
        if action == "export":
            return self.session is not None
        if action in ("rename_session", "delete_session"):
            return self._target_session_id() is not None
        if action == "send":
            return bool(self.prompt.text.strip())
        if action == "pick_tools":
            return self._service is not None and self._service.gate is not None
        return True

    @property
    def replying(self) -> bool:
        """True from the moment a message is sent until its reply has ended (finished, stopped,
        failed or given back to the message box); a new message waits until then."""
        return self._replying

    def system_commands(self) -> Iterable[SystemCommand]:
        """This screen's actions for the command palette, only those that would do something now."""
        for command in PALETTE_COMMANDS:
            if not self.check_action(command.action, ()):
                continue
            default = next(
                (
                    b.key
                    for b in [*self.BINDINGS, *PromptInput.BINDINGS]
                    if isinstance(b, Binding) and b.id == command.binding_id
                ),
                "",
            )
            key = self._key(command.binding_id, default) if command.binding_id and default else ""
            help_text = f"{command.help} ({key})" if key else command.help
            yield SystemCommand(command.title, help_text, getattr(self, f"action_{command.action}"))

    # -- sending -----------------------------------------------------------------------------------

    @on(PromptInput.Submitted, "#prompt")
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        await self._send_text(event.text)

    async def action_send(self) -> None:
        await self._send_text(self.prompt.text)

    async def _send_text(self, text: str) -> None:
        body, flag = split_think_flag(text.strip())
        if not body:
            if flag is not None:
                # A lone /think or /no_think is a mode switch, not a message.
                self.prompt.clear()
                self.think = flag
            return
        service = self._service
        if service is None:
            self.notify(self._model_error or "no model is available", title="Cannot send", severity="error")
            return
        if service.load_error:
            self.notify(
                f"the model failed to load: {service.load_error}", title="Cannot send", severity="error"
            )
            return
        if self.replying:
            self.notify(
                f"A reply is still being written; press {self._key('chat.cancel', 'escape')} to stop it.",
                title="Wait a moment",
                severity="warning",
            )
            return
        # Marked busy before the first await, so a second Enter cannot slip in while mounting.
        self._replying = True
        self._reply_started = False
        self.prompt.cursor_blink = False  # one redraw less, twice a second, while the model writes
        self.prompt.clear()
        await self._clear_highlight()
        await self._remove_welcome()
        user = MessageView("user", body)
        waiting = "generating…" if service.ready.is_set() else "waiting for the model to load…"
        reply = MessageView("assistant", status=waiting)
        self._pending_user, self._live, self._pending_text = user, reply, text
        await self.log_view.mount_all([user, reply])
        self.log_view.anchor()
        self.refresh_bindings()
        self._send(text)

    @work(exclusive=True, group="reply")
    async def _send(self, text: str) -> None:
        assert self._service is not None
        live = self._live
        try:
            if self.session is None:
                session = await self._store.create_session(
                    title_from_prompt(split_think_flag(text)[0]), self._model_label)
                self._set_session(session)
            elif self.session.title == NEW_CHAT_TITLE and self.session.message_count == 0:
                # Made empty by the tool picker: the first message names it, as for any chat.
                renamed = await self._store.rename_session(self.session.id,
                                                           title_from_prompt(split_think_flag(text)[0]))
                self._set_session(renamed)
            assert self.session is not None
            self._reply_session = self.session.id
            await self._service.send(self.session.id, text, think=self.think)
        except SmoltuiError as error:
            if self._service.load_error is not None:
                # The model failed while the message waited for it, so nothing was stored: the
                # message goes back in the box (the ModelFailed notice says why). Whichever of
                # this worker and that event comes first gives it back.
                await self._restore_unsent()
            else:
                self.notify(str(error), title="Message not sent", severity="error")
                await self._fail_live(live, str(error))
        except Exception as error:  # a bug must not take the chat down; the log has the traceback
            log.exception("sending a message failed")
            self.notify(f"{type(error).__name__}: {error}", title="Unexpected error", severity="error")
            await self._fail_live(live, f"unexpected error: {error}")
        finally:
            self._replying = False
            self.prompt.cursor_blink = True
            self._reply_session = None
            self._pending_user = None
            self.refresh_bindings()
            self._refresh_sessions()

    async def _fail_live(self, live: MessageView | None, message: str) -> None:
        if live is not None and live.is_attached and not live.finished:
            await live.finish(error=message)
        if live is self._live:
            self._live = None

    # -- orchestrator events -----------------------------------------------------------------------

    @on(BusEvent)
    async def _bus_event(self, message: BusEvent) -> None:
        event = message.event
        status = self.status
        live = self._live
        match event:
            case ModelLoading(fraction=fraction, message=text):
                # Progress hops threads on its way here and can trail the ModelReady it preceded.
                if self._service is not None and (self._service.ready.is_set() or self._service.load_error):
                    return
                status.state = "loading"
                status.load_fraction = fraction
                status.message = text
            case ModelReady(model_name=name, backend=backend, context_size=size):
                status.state = "ready"
                status.model_name = name or self._model_label
                status.backend_name = backend
                status.context_size = size
                if live is not None and not self._reply_started:
                    live.set_status("generating…")
            case ModelFailed(message=text):
                status.state = "failed"
                status.message = text
                self.notify(text, title="The model failed to load", severity="error", timeout=12)
                # A message waiting for the model would wait forever: give it back to the user.
                if self.replying:
                    self.workers.cancel_group(self, "reply")
                    await self._restore_unsent()
            case ReplyStarted(session_id=sid, think=think) if sid == self.session_id:
                self._reply_started = True
                if live is None and self._replying and sid == self._reply_session:
                    # The next step after tool results: a new reply under them.
                    live = self._live = MessageView("assistant", status="generating…")
                    await self.log_view.mount(live)
                if live is not None:
                    live.set_status("thinking…" if think else "generating…")
            case ToolCallRequested(session_id=sid) if sid == self.session_id:
                view = ToolCallView(event.call_id, event.name, event.arguments, error=event.error,
                                    roots=self._tool_file_roots())
                self._call_views[event.call_id] = view
                await self.log_view.mount(view)
            case ToolCallDone(session_id=sid) if sid == self.session_id:
                view = self._call_views.get(event.call_id)
                if view is not None:
                    view.finish(event.ok, event.summary, arguments=event.arguments)
                # A call cancelled while it asked ends without an answer: its card goes too.
                self._drop_card(event.call_id)
                recount = getattr(self.app, "recount_approvals", None)
                if recount is not None:
                    recount()
            case ToolStepLimit(session_id=sid, steps=steps) if sid == self.session_id:
                await self.log_view.mount(Static(
                    f"⚠ stopped after {steps} rounds of tool calls; ask again to go on",
                    classes="notice", markup=False))
            case ThinkingTokenDelta(session_id=sid, text=text) if sid == self.session_id:
                if live is not None:
                    await live.write_thinking(text)
            case TokenDelta(session_id=sid, text=text) if sid == self.session_id:
                if live is not None:
                    if live.stats_text == "thinking…":
                        live.set_status("generating…")  # the answer has begun (or came without a thought)
                    await live.write(text)
            case ContextTrimmed(session_id=sid, dropped_messages=dropped, context_size=size):
                if sid == self.session_id:
                    notice = Static(
                        f"⚠ dropped {dropped} older message{'s' if dropped != 1 else ''} "
                        f"to fit the {size}-token context",
                        classes="notice",
                        markup=False,
                    )
                    await self.log_view.mount(
                        notice, before=live if live is not None and live.parent else None
                    )
            case ReplyFinished(session_id=sid, message_id=mid, stats=stats):
                status.tok_s = stats.decode_tok_s
                status.context_used = stats.context_used
                status.context_size = stats.context_size
                if sid == self.session_id and live is not None:
                    live.message_id = mid
                    # A reply of calls only keeps its view: its stats line stands above the calls.
                    await live.finish(stats.as_dict())
                    self._live = None
                elif sid == self.session_id and all(v.message_id != mid for v in self.message_views()):
                    # The user left this chat mid-reply and came back: the reply was not on screen.
                    await self.log_view.mount(
                        MessageView(
                            "assistant",
                            event.content,
                            thinking=event.thinking or None,
                            stats=stats.as_dict(),
                            message_id=mid,
                        )
                    )
                self.refresh_bindings()
            case ReplyFailed(session_id=sid, message=text):
                self.notify(text, title="The reply failed", severity="error", timeout=10)
                if sid == self.session_id:
                    await self._fail_live(live, text)
                self.refresh_bindings()

    async def _restore_unsent(self) -> None:
        """Take back a message that never reached the store: remove its views, refill the box."""
        # The state changes before the first await, so a second caller finds nothing to restore.
        views = [view for view in (self._pending_user, self._live) if view is not None]
        self._pending_user = self._live = None
        self._replying = False
        self.prompt.cursor_blink = True
        self._reply_session = None
        if not self.prompt.text.strip():
            self.prompt.load_text(self._pending_text)
            self.prompt.move_cursor(self.prompt.document.end)
        for view in views:
            if view.is_attached:
                await view.stop_streams()
                await view.remove()
        if not self.message_views():
            self._show_welcome()
        self.refresh_bindings()

    # -- cancel, think, copy, export -------------------------------------------------------------

    async def action_cancel_reply(self) -> None:
        service = self._service
        if service is not None and service.cancel():
            return  # the reply ends normally, with what it had, and a "stopped" stats line
        if not self.replying:
            return
        self.workers.cancel_group(self, "reply")
        if service is not None and not service.ready.is_set():
            # Still waiting for the model: nothing was stored, so the message goes back in the box.
            await self._restore_unsent()
        else:
            await self._fail_live(self._live, "stopped before the reply began")

    def action_toggle_think(self) -> None:
        self.think = not self.think

    def watch_think(self, think: bool) -> None:
        self.status.think = think
        self.notify(f"Thinking {'on' if think else 'off'} for the next messages", timeout=2)

    def _copy_target(self) -> MessageView | None:
        focused = self.focused
        if isinstance(focused, MessageView) and focused.markdown:
            return focused
        for view in reversed(self.message_views()):
            if view.role == "assistant" and view.markdown:
                return view
        return None

    def action_copy_reply(self) -> None:
        view = self._copy_target()
        if view is None:
            self.notify("There is no reply to copy yet.", severity="warning")
            return
        text = view.markdown
        self.app.copy_to_clipboard(text)
        what = "reply" if view.role == "assistant" else "message"
        self.notify(f"Copied the {what} ({len(text)} characters).", timeout=3)

    def action_export(self) -> None:
        if self.session is None:
            self.notify("Nothing to export yet: send a message first.", severity="warning")
            return
        self._export(self.session.id)

    @work(group="export")
    async def _export(self, session_id: int) -> None:
        try:
            await asyncio.to_thread(self._exports_dir.mkdir, parents=True, exist_ok=True)
            path = await export_session(self._store, session_id, self._exports_dir)
        except OSError as error:
            self.notify(
                f"cannot create {self._exports_dir}: {error.strerror or error}",
                title="Export failed",
                severity="error",
            )
            return
        except SmoltuiError as error:
            self.notify(str(error), title="Export failed", severity="error")
            return
        self.notify(str(path), title="Chat exported", timeout=8)

    # -- sessions ----------------------------------------------------------------------------------

    def _set_session(self, session: Session | None) -> None:
        changed = session is None or self.session is None or session.id != self.session.id
        self.session = session
        if changed:
            self.session_tools = []
            if session is not None:
                self._load_session_tools(session.id)
        self._show_title()

    def _show_title(self) -> None:
        title = self.session.title if self.session else NEW_CHAT_TITLE
        if self.session_tools:
            title += f"  ·  ⚙ {', '.join(self.session_tools)}"
        self.title_label.update(title)

    @work(group="session-tools")
    async def _load_session_tools(self, session_id: int) -> None:
        if self._service is None:
            return
        try:
            tools = await self._service.session_tools(session_id)
        except SmoltuiError as error:
            self.notify(str(error), title="Tools", severity="error")
            return
        if self.session is not None and self.session.id == session_id:
            self.session_tools = [t.name for t in tools]
            self._show_title()

    # -- tools -------------------------------------------------------------------------------------

    def action_pick_tools(self) -> None:
        self._pick_tools()

    @work(group="pick-tools")
    async def _pick_tools(self) -> None:
        service = self._service
        if service is None or service.gate is None:
            return
        chosen = await self.app.push_screen_wait(ToolPickerDialog(service.available_tools(), self.session_tools))
        if chosen is None:
            return
        try:
            if self.session is None:
                self._set_session(await self._store.create_session(NEW_CHAT_TITLE, self._model_label))
                self._refresh_sessions()
            assert self.session is not None
            await service.set_session_tools(self.session.id, chosen)
        except SmoltuiError as error:
            self.notify(str(error), title="Tools", severity="error")
            return
        # A load of the stored list started before this pick (creating the chat starts one) would
        # answer with the list as it was and switch the tools back off.
        self.workers.cancel_group(self, "session-tools")
        switched_on = chosen and not self.session_tools
        self.session_tools = list(chosen)
        self._show_title()
        if not chosen:
            self.notify("tools are off for this chat")
        elif switched_on and self.think:
            # SmolLM3 calls tools more reliably without a reasoning block (BFCL 92.3 vs 88.8).
            self.think = False
            self.notify(f"{len(chosen)} tool(s) on; thinking switched off for tool calling "
                        f"({self._key('chat.think', 'ctrl+t')} turns it back on)")
        else:
            self.notify(f"tools on: {', '.join(chosen)}")

    def chat_approval_event(self, event: ApprovalNeeded | ToolCallFinished) -> None:
        """An approval for a call of this chat shows up under the call, in the conversation."""
        if isinstance(event, ToolCallFinished):
            self._drop_card(event.call.id)
            return
        call = event.call
        if call.session_id is None or call.session_id != self.session_id or call.id in self._chat_cards:
            return
        card = card_for(self.core, event.request)
        self._chat_cards[call.id] = card
        anchor = self._call_views.get(call.id)
        self.log_view.mount(card, after=anchor if anchor is not None and anchor.parent else None)
        # Not focused: the user may be typing, and the next "y" is meant for the message box. The
        # card says how to reach it (ctrl+g, a click, tab), and the status bar counts it.
        self._number_cards()
        self.log_view.scroll_end(animate=False)

    def _number_cards(self) -> None:
        """Each waiting card of this chat names its place among the chat's waiting calls, oldest first."""
        order = [r.call.id for r in self.core.gate.waiting(session_id=self.session_id)] \
            if self.session_id is not None else []
        for call_id, card in self._chat_cards.items():
            card.position = (order.index(call_id) + 1, len(order)) if call_id in order else None

    def _drop_card(self, call_id: str) -> None:
        card = self._chat_cards.pop(call_id, None)
        if card is not None:
            had_focus = card.has_focus
            card.remove()
            if had_focus:
                # Back to the message box, not on to another card: a key pressed twice answers once.
                self.prompt.focus()
            self._number_cards()

    @on(ApprovalCard.Answered)
    def _card_answered(self, message: ApprovalCard.Answered) -> None:
        message.stop()
        gate = self._service.gate if self._service is not None else None
        if gate is None or not gate.answer(message.call_id, message.decision):
            card = self._chat_cards.get(message.call_id)
            if card is not None:
                card.settle("already answered", replace=True)
        elif message.decision.kind == "edit" and message.decision.arguments is not None:
            view = self._call_views.get(message.call_id)
            if view is not None:  # the line shows the arguments that run, not the model's
                view.ran_with(json.dumps(message.decision.arguments, ensure_ascii=False))
        if message.card is not None and message.card.has_focus:
            self.prompt.focus()  # answered: the keys go back to the message box
        self._number_cards()

    @work(exclusive=True, group="session-list")
    async def _refresh_sessions(self) -> None:
        try:
            sessions = await self._store.list_sessions()
        except SmoltuiError as error:
            self.notify(str(error), title="Cannot list chats", severity="error")
            return
        self.session_list.show(sessions, self.session_id)
        self.refresh_bindings()

    def _target_session_id(self) -> int | None:
        """The chat that rename/delete act on: the highlighted one in the list, else this chat."""
        panel = self.session_list
        if panel.has_focus_within:
            highlighted = panel.highlighted_session
            if highlighted is not None:
                return highlighted.id
        return self.session_id

    def _sessions_visible(self) -> bool:
        return self._sessions_pinned if self._sessions_pinned is not None else self.has_class("-wide")

    def action_toggle_sessions(self) -> None:
        show = not self._sessions_visible()
        self._pin_sessions(show)
        if show:
            if self.has_class("-narrow") and self.workflow_tree is not None and self._tree_visible():
                # Below 110 columns the chat list and the workflow tree take turns: side by side
                # they would leave the conversation a sliver. Unpinned, not pinned shut: a wider
                # terminal shows the tree again.
                self._tree_pinned = None
                self._apply_layout()
            self.session_list.options.focus()
        elif self.session_list.has_focus_within:
            self.prompt.focus()

    def _pin_sessions(self, show: bool | None) -> None:
        """Pin the chat list open or shut; None lets the terminal's width decide again."""
        self._sessions_pinned = show
        self.set_class(show is True, "-show-sessions")
        self.set_class(show is False, "-hide-sessions")

    def action_toggle_workflows(self) -> None:
        super().action_toggle_workflows()
        if self.has_class("-narrow") and self._tree_visible() and self._sessions_visible():
            self._pin_sessions(None)  # they take turns below 110 columns (see action_toggle_sessions)

    async def action_new_session(self) -> None:
        await self._clear_log()
        self._set_session(None)
        self._show_welcome()
        self.status.tok_s = None
        self.status.context_used = None
        self.prompt.focus()
        self._refresh_sessions()

    @on(SessionList.Picked)
    def _picked(self, event: SessionList.Picked) -> None:
        event.stop()
        self._open_session(event.session_id)
        self.prompt.focus()

    def open_session(self, session_id: int, highlight_message: int | None = None) -> None:
        """Show a saved chat (as picking it in the chat list does), scrolled to ``highlight_message``
        when given, else to its end."""
        self._open_session(session_id, highlight_message)

    @work(exclusive=True, group="open-session")
    async def _open_session(self, session_id: int, highlight_message: int | None = None, *,
                            focus_call: str | None = None) -> None:
        try:
            session = await self._store.get_session(session_id)
            entries = await load_transcript(self._store, session_id)
        except SmoltuiError as error:
            self.notify(str(error), title="Cannot open the chat", severity="error")
            return
        await self._show_session(session, entries, highlight_message, focus_call)
        self._refresh_sessions()

    async def _show_session(self, session: Session, entries: list[Entry], highlight_message: int | None,
                            focus_call: str | None = None) -> None:
        await self._clear_log()
        self._set_session(session)
        shown = entries[-MAX_SHOWN_MESSAGES:]
        widgets: list[Static | MessageView] = []
        if len(shown) < len(entries):
            widgets.append(
                Static(
                    f"showing the last {len(shown)} of {len(entries)} messages and calls; "
                    "export the chat to read all of it",
                    classes="notice",
                    markup=False,
                )
            )
        views: list[MessageView] = []
        calls: list[ToolCallView] = []
        for entry in shown:
            if isinstance(entry, Called):
                view = ToolCallView(entry.call_id, entry.name, entry.arguments, error=entry.error,
                                    roots=self._tool_file_roots())
                if entry.ok is not None:
                    view.finish(entry.ok, entry.summary or "")
                calls.append(view)
                widgets.append(view)
                continue
            message = MessageView(entry.role, entry.text, thinking=entry.thinking, stats=entry.stats,
                                  message_id=entry.id)
            views.append(message)
            widgets.append(message)
        if widgets:
            await self.log_view.mount_all(widgets)
        else:
            self._show_welcome()
        said = [e for e in entries if isinstance(e, Said)]
        last_stats = next((e.stats for e in reversed(said) if e.role == "assistant" and e.stats), None)
        self.status.tok_s = _number(last_stats, "decode_tok_s")
        used = _number(last_stats, "context_used")
        self.status.context_used = int(used) if used is not None else None
        target = next((v for v in views if v.message_id == highlight_message), None)
        if target is not None:
            target.add_class("-highlight")
            self.log_view.release_anchor()
            self.call_after_refresh(self.log_view.scroll_to_widget, target, animate=False, top=True)
        else:
            self.log_view.anchor()
        self._restore_cards(calls, focus_call)

    def _tool_file_roots(self) -> tuple[Path, ...]:
        return self.core.chat.file_roots(self.session_id)

    def _restore_cards(self, calls: list[ToolCallView], focus_call: str | None = None) -> None:
        """A call of this chat that still waits for its answer (the user left the chat while it
        asked): its card comes back under its call, and that call's view follows it again.
        ``focus_call``: the card the user asked for with ctrl+g, which takes the focus."""
        if self.session is None:
            return
        by_id = {view.call_id: view for view in calls}
        for request in self.core.gate.waiting(session_id=self.session.id):
            call = request.call
            if call.id in self._chat_cards:
                continue
            view = by_id.get(call.id)
            if view is not None:
                self._call_views[call.id] = view
            self.chat_approval_event(ApprovalNeeded(request))
        if focus_call is not None:
            self.call_after_refresh(self._focus_card, focus_call)

    def show_approval(self, session_id: int, call_id: str) -> None:
        """Bring a waiting call of one of the chats into view, its card focused (the user asked
        for it: ctrl+g)."""
        if session_id != self.session_id:
            self._open_session(session_id, focus_call=call_id)  # its cards come back with it
            return
        self._focus_card(call_id)

    def _focus_card(self, call_id: str) -> None:
        card = self._chat_cards.get(call_id)
        if card is not None and card.is_attached and not card.settled:
            self.set_focus(card)  # at once, not after a refresh: a second ctrl+g must find it there
            self.log_view.scroll_to_widget(card, animate=False)

    async def _clear_log(self) -> None:
        for view in self.message_views():
            await view.stop_streams()
        # The reply may go on in the background; its events no longer belong to this view.
        self._live = None
        # Cards and call views go with the log; a card still waiting returns with its chat.
        self._chat_cards.clear()
        self._call_views.clear()
        await self.log_view.remove_children()

    async def _clear_highlight(self) -> None:
        for view in self.log_view.query(".-highlight"):
            view.remove_class("-highlight")

    async def _remove_welcome(self) -> None:
        await self.log_view.query(".welcome").remove()

    def action_rename_session(self) -> None:
        session_id = self._target_session_id()
        if session_id is not None:
            self._rename(session_id)

    @work(group="dialog")
    async def _rename(self, session_id: int) -> None:
        try:
            session = await self._store.get_session(session_id)
            title = await self.app.push_screen_wait(TextPromptDialog("Rename chat", session.title))
            if title is None or title == session.title:
                return
            session = await self._store.rename_session(session_id, title)
        except SmoltuiError as error:
            self.notify(str(error), title="Cannot rename the chat", severity="error")
            return
        if session.id == self.session_id:
            self._set_session(session)
        self._refresh_sessions()

    def action_delete_session(self) -> None:
        session_id = self._target_session_id()
        if session_id is not None:
            self._delete(session_id)

    @work(group="dialog")
    async def _delete(self, session_id: int) -> None:
        if session_id == self._reply_session:
            self.notify(
                f"A reply is being written in this chat; press {self._key('chat.cancel', 'escape')} "
                "to stop it first.",
                severity="warning",
            )
            return
        try:
            session = await self._store.get_session(session_id)
            count = session.message_count
            question = (
                f"Delete “{session.title}” and its {count} message{'s' if count != 1 else ''}? "
                "This cannot be undone."
            )
            if not await self.app.push_screen_wait(ConfirmDialog(question, confirm_label="Delete")):
                return
            await self._store.delete_session(session_id)
        except SmoltuiError as error:
            self.notify(str(error), title="Cannot delete the chat", severity="error")
            return
        if session_id == self.session_id:
            await self.action_new_session()
        else:
            self._refresh_sessions()
        self.notify(f"Deleted “{session.title}”.", timeout=3)

    # -- search ------------------------------------------------------------------------------------

    def action_search(self) -> None:
        self._search()

    @work(group="dialog")
    async def _search(self) -> None:
        hit = await self.app.push_screen_wait(SearchScreen(self._store))
        if hit is not None:
            self._open_session(hit.session_id, hit.message_id)


def _number(stats: Mapping[str, object] | None, key: str) -> float | None:
    value = stats.get(key) if stats else None
    return float(value) if isinstance(value, int | float) else None
