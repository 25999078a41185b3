"""Chat sessions: turn a user's message into a streamed, persisted reply.

The TUI and the one-shot CLI drive the same :class:`ChatService`. It loads the backend, keeps the
prompt inside the model's context (trimming the oldest turns with a visible notice), streams the
reply as events and commits both messages to the store before announcing them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smoltui.backends.base import (
    Backend,
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    GenerationStats,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from smoltui.backends.tool_calls import format_call
from smoltui.errors import BackendError, SmoltuiError
from smoltui.orchestrator.chat_tools import offered, run_call
from smoltui.orchestrator.events import (
    ContextTrimmed,
    EventBus,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ThinkingTokenDelta,
    TokenDelta,
    ToolCallDone,
    ToolCallRequested,
    ToolStepLimit,
)
from smoltui.orchestrator.model import Model
from smoltui.orchestrator.store import MessageToolCall, Store, StoredMessage

if TYPE_CHECKING:
    from smoltui.orchestrator.approval import ApprovalGate
    from smoltui.tools.base import Tool

log = logging.getLogger("smoltui")

_THINK_FLAG = re.compile(r"(?:^|\s)/(think|no_think)\s*$|^\s*/(think|no_think)(?:\s|$)")


def split_think_flag(text: str) -> tuple[str, bool | None]:
    """Strip a leading or trailing ``/think`` / ``/no_think`` flag; return the text and the flag."""
    match = _THINK_FLAG.search(text)
    if not match:
        return text, None
    flag = match.group(1) or match.group(2)
    stripped = (text[: match.start()] + " " + text[match.end() :]).strip()
    return stripped, flag == "think"


@dataclass
class ChatSettings:
    system_prompt: str = ""
    params: GenerationParams = GenerationParams()
    # Trim down to this share of the prompt budget so that trimming (which invalidates the KV
    # cache from the first dropped turn on) happens once every few turns rather than every turn.
    trim_target: float = 0.75
    max_tool_steps: int = 6
    """Rounds of tool calls one message may lead to before the loop stops and says so."""
    save_every_s: float = 1.0
    """A streaming reply is saved at most this often (and at least this often while it grows):
    kill -9 loses at most this much of it."""


class ChatService:
    def __init__(self, model: Model, store: Store, settings: ChatSettings | None = None, *,
                 bus: EventBus | None = None, gate: ApprovalGate | None = None,
                 workspace: Path | None = None) -> None:
        """
        Args:
            model: the core's model (shared with workflow runs and the planner).
            bus: the core's bus (one per core); a fresh one when used on its own.
            gate: runs the model's tool calls (asking the user where the policy says so); without
                one, chats offer no tools.
            workspace: the folder file and code tools work in (default: the current directory).
        """
        self.model = model
        self.store = store
        self.settings = settings or ChatSettings()
        self.gate = gate
        self.workspace = workspace or Path.cwd()
        self._tool_job: asyncio.Task[Any] | None = None
        self.bus = bus if bus is not None else EventBus()
        self._cancel: CancelToken | None = None
        self._draft: _Draft | None = None
        self._reply_lock = asyncio.Lock()

    # -- model -----------------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        assert self.model.backend is not None, "a chat service needs a model"
        return self.model.backend

    @property
    def ready(self) -> asyncio.Event:
        return self.model.ready

    @property
    def load_error(self) -> str | None:
        return self.model.load_error

    @property
    def load_exception(self) -> SmoltuiError | None:
        return self.model.load_exception

    async def load_model(self) -> bool:
        """Load the model (once per core), publishing progress; False (and why, as an event) on failure."""
        return await self.model.load()

    # -- replies ---------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._reply_lock.locked()

    def cancel(self) -> bool:
        """Stop the reply in progress, keeping what was generated; False if nothing was running.

        During a tool call (waiting for approval, or running) the call is cancelled and the loop ends.
        """
        if self._tool_job is not None and not self._tool_job.done():
            self._tool_job.cancel()
            return True
        if self._cancel is None:
            return False
        self._cancel.cancel()
        return True

    async def stop(self) -> None:
        """Stop the reply in progress and save what it said so far, marked cut off: what a front
        end does when its process is told to end (a signal, a closed terminal, quitting)."""
        self.cancel()
        draft = self._draft
        if draft is not None:
            try:
                await draft.finish(cut_off=True)
            except SmoltuiError as error:
                log.warning("the reply so far was not saved: %s", error)

    # -- tools -----------------------------------------------------------------------------------

    def available_tools(self) -> list[Tool]:
        """Every tool a chat could switch on."""
        return list(self.gate.registry.tools) if self.gate is not None else []

    async def session_tools(self, session_id: int) -> list[Tool]:
        if self.gate is None:
            return []
        names = await self.store.session_tools(session_id)
        return offered(self.gate, names)

    async def set_session_tools(self, session_id: int, names: Sequence[str]) -> None:
        if self.gate is None and names:
            raise SmoltuiError("tools are not available in this chat (no approval gate)")
        unknown = [n for n in names if self.gate is None or self.gate.registry.get(n) is None]
        if unknown:
            raise SmoltuiError(f"unknown tool(s): {', '.join(unknown)}")
        await self.store.set_session_tools(session_id, list(names))

    async def send(self, session_id: int, text: str, *, think: bool | None = None) -> ReplyFinished | None:
        """Store ``text`` as the user's turn, stream a reply, store it; None if the reply failed."""
        text, flag = split_think_flag(text)
        if flag is not None:
            think = flag
        if think is None:
            think = self.settings.params.think
        if not text:
            raise SmoltuiError("nothing to send: the message is empty")
        async with self._reply_lock:
            # Starts the load if no front end has (a server, a script); joins it if one has.
            await self.model.load()
            if self.load_error:
                raise BackendError(f"the model is not loaded: {self.load_error}")
            user = await self.store.add_message(session_id, "user", text)
            return await self._reply(session_id, user, think)

    async def _reply(self, session_id: int, user: StoredMessage, think: bool) -> ReplyFinished | None:
        """The model's answer; with tools on, call → result → call … until it answers in text."""
        tools = await self.session_tools(session_id)
        params = replace(self.settings.params, think=think, tools=[t.schema() for t in tools] or None)
        after = user.id
        steps = 0
        while True:
            finished = await self._step(session_id, after, params)
            if finished is None or not tools or not finished.tool_calls:
                return finished
            if steps >= self.settings.max_tool_steps:
                self.bus.publish(ToolStepLimit(session_id, steps))
                return finished
            steps += 1
            for call in finished.tool_calls:
                stored = await self._call(session_id, finished.message_id, call)
                if stored is None:  # cancelled, or the result could not be saved
                    return finished
                after = stored

    def artifacts_dir(self, session_id: int) -> Path:
        """Where the chat's tools write what they make (a chart's PNG): beside the database."""
        return Path(self.store.path).parent / "chat-artifacts" / str(session_id)

    def file_roots(self, session_id: int) -> tuple[Path, ...]:
        """Where a tool's result may name files a person wants to see: the chat's artifacts, then
        the workspace."""
        return self.artifacts_dir(session_id), Path(self.workspace)

    async def _call(self, session_id: int, message_id: int, call: ToolCallDelta) -> int | None:
        """Run one call of the reply ``message_id``, store its result as a tool message and settle
        the call's row; the tool message's id, or None to stop."""
        assert self.gate is not None
        self.bus.publish(ToolCallRequested(session_id, call.id, call.name, call.arguments, call.error))
        artifacts = self.artifacts_dir(session_id)
        self._tool_job = asyncio.ensure_future(run_call(
            self.gate, call, session_id=session_id, workspace=self.workspace, artifacts_dir=artifacts))
        try:
            outcome = await self._tool_job
        except asyncio.CancelledError:
            if asyncio.current_task() is not None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the whole reply is being cancelled, not just the call
            self.bus.publish(ToolCallDone(session_id, call.id, call.name, False, "cancelled", None))
            return None
        finally:
            self._tool_job = None
        try:
            stored = await self.store.add_message(session_id, "tool", outcome.content)
            await self.store.settle_tool_call(
                message_id, call.id, ok=outcome.ok, summary=outcome.summary, decision=outcome.decision,
                decided_by=outcome.decided_by, result_message_id=stored.id, arguments=outcome.arguments)
        except SmoltuiError as error:
            self.bus.publish(ReplyFailed(session_id, f"the tool result was not saved: {error}"))
            return None
        self.bus.publish(ToolCallDone(session_id, call.id, call.name, outcome.ok, outcome.summary, stored.id,
                                      arguments=outcome.arguments))
        return stored.id

    async def _step(self, session_id: int, after: int, params: GenerationParams) -> ReplyFinished | None:
        """One generation: stream it, store it (text and the calls' markup), announce it."""
        history = await self.store.messages(session_id)
        try:
            messages = await self._fit_context(session_id, _to_chat(history, self.settings.system_prompt), params)
        except SmoltuiError as error:
            self.bus.publish(ReplyFailed(session_id, str(error)))
            return None
        self.bus.publish(ReplyStarted(session_id, after, params.think))
        cancel = self._cancel = CancelToken()
        content: list[str] = []
        shown: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCallDelta] = []
        stats: GenerationStats | None = None
        # Saved as it grows (cut off until it ends), so a signal or kill -9 keeps what was said.
        draft = self._draft = _Draft(self.store, session_id, content, thinking, self.settings.save_every_s)
        try:
            async with self.model.turn(f"chat {session_id}") as backend:
                async for event in backend.stream(messages, params, cancel):
                    if isinstance(event, TextDelta):
                        content.append(event.text)
                        shown.append(event.text)
                        self.bus.publish(TokenDelta(session_id, event.text))
                    elif isinstance(event, ThinkingDelta):
                        thinking.append(event.text)
                        self.bus.publish(ThinkingTokenDelta(session_id, event.text))
                    elif isinstance(event, ToolCallDelta):
                        calls.append(event)
                        # The markup goes into the history as generated, so the next prompt re-renders
                        # exactly the tokens already in the KV cache.
                        content.append(event.raw or format_call(event.name, _loads(event.arguments)))
                    elif isinstance(event, Finished):
                        stats = event.stats
                        continue
                    draft.grew()
        except SmoltuiError as error:
            # What was said before the error stays in the history, marked cut off.
            await _keep(draft, session_id, self.bus)
            self.bus.publish(ReplyFailed(session_id, str(error)))
            return None
        except asyncio.CancelledError:
            # The process is ending (a signal) or the front end went away: keep what was said.
            cancel.cancel()
            await _keep(draft, session_id, self.bus)
            raise
        finally:
            self._cancel = None
            if self._draft is draft:
                self._draft = None
        if stats is None:  # a backend that ended without stats is a bug, but keep the text
            stats = GenerationStats(0, 0, 0, 0.0, 0.0, 0.0, 0, self.backend.context_size, 0.0, "cancelled")
        if stats.stop_reason == "cancelled":
            calls = []  # a call cut off by the user is not run
        reply_thinking = "".join(thinking)
        try:
            stored = await draft.finish(
                cut_off=stats.stop_reason == "cancelled",
                stats={**stats.as_dict(), "think": params.think},  # the mode is stored with the message
                tool_calls=[MessageToolCall(0, position, call.id, call.name, call.arguments, call.error)
                            for position, call in enumerate(calls)],
            )
        except SmoltuiError as error:
            # The streamed text is still on screen; say plainly that it is not in the history.
            self.bus.publish(ReplyFailed(session_id, f"the reply was not saved: {error}"))
            return None
        assert stored is not None  # saved with its stats, so saved
        finished = ReplyFinished(session_id, stored.id, "".join(shown), reply_thinking, stats, tuple(calls))
        self.bus.publish(finished)
        return finished

    async def _fit_context(
        self, session_id: int, messages: list[ChatMessage], params: GenerationParams
    ) -> list[ChatMessage]:
        """Drop the oldest turns until prompt + reply room fits the context; announce any drop."""
        context = self.backend.context_size
        reserve = min(params.max_tokens, context // 2)
        budget = context - reserve
        used = await self.backend.count_tokens(messages, params)
        if used <= budget:
            return messages
        system = [m for m in messages[:1] if m.role == "system"]
        turns = messages[len(system) :]
        dropped = 0
        target = int(budget * self.settings.trim_target)
        while len(turns) > 1 and used > target:
            # Drop a whole exchange so the history never starts with an orphaned assistant turn.
            cut = 1
            while cut < len(turns) - 1 and turns[cut].role != "user":
                cut += 1
            turns = turns[cut:]
            dropped += cut
            used = await self.backend.count_tokens(system + turns, params)
        if used > budget:
            raise SmoltuiError(
                f"this message needs {used} tokens but the model's context holds {context} "
                f"(with {reserve} kept for the reply); shorten it or raise model.n_ctx in the config"
            )
        self.bus.publish(ContextTrimmed(session_id, dropped, context))
        return system + turns


class _Draft:
    """A reply saved while it streams: the first piece at once, then at most once every
    ``every_s`` seconds (one UPDATE on the store's thread; the stream never waits for it), marked
    cut off until :meth:`finish` says how it ended."""

    def __init__(self, store: Store, session_id: int, content: list[str], thinking: list[str],
                 every_s: float) -> None:
        self._store = store
        self._session_id = session_id
        self._content = content  # the reply's own lists: a save writes what they hold by then
        self._thinking = thinking
        self._every_s = every_s
        self.message_id: int | None = None
        self._lock = asyncio.Lock()  # one save at a time, so the row is inserted once
        self._changed = asyncio.Event()
        self._saver: asyncio.Task[None] | None = None
        self._failed = False
        self._final: StoredMessage | None = None

    def grew(self) -> None:
        """The reply has more to save; returns at once."""
        if self._failed:
            return
        self._changed.set()
        if self._saver is None:
            self._saver = asyncio.ensure_future(self._keep_saving())

    async def finish(self, *, cut_off: bool, stats: dict[str, Any] | None = None,
                     tool_calls: Sequence[MessageToolCall] = ()) -> StoredMessage | None:
        """The last save (StoreError if it fails): how the reply ended, with its stats and calls.
        Without stats (the reply stopped before it could say how it ended), a reply that said
        nothing yet is not saved: None."""
        saver, self._saver = self._saver, None
        if saver is not None:
            saver.cancel()  # a save it has begun still completes: it is shielded, and holds the lock
        self._failed = True  # no periodic save after this one
        if stats is None and self.message_id is None and not (self._content or self._thinking):
            return None
        try:
            return await self._save(cut_off=cut_off, stats=stats, tool_calls=tool_calls)
        finally:
            if self.message_id is not None:
                self._store.writing.discard(self.message_id)

    async def _keep_saving(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._changed.wait()
            self._changed.clear()
            started = loop.time()
            save = asyncio.ensure_future(self._save(cut_off=True))
            # Once cancelled (by finish), nobody awaits the save: its error must not be reported
            # as never retrieved (finish's own save says what failed).
            save.add_done_callback(lambda done: done.cancelled() or done.exception())
            try:
                await asyncio.shield(save)
            except SmoltuiError as error:
                # A full disk, say: the reply goes on on screen, and its last save says what failed.
                log.warning("saving the reply as it streams failed: %s", error)
                self._failed = True
                return
            await asyncio.sleep(max(0.0, self._every_s - (loop.time() - started)))

    async def _save(self, *, cut_off: bool, stats: dict[str, Any] | None = None,
                    tool_calls: Sequence[MessageToolCall] | None = None) -> StoredMessage:
        async with self._lock:
            if self._final is not None:
                return self._final  # the reply has ended and says how: nothing after that
            text, thinking = "".join(self._content), "".join(self._thinking) or None
            if self.message_id is None:
                stored = await self._store.add_message(self._session_id, "assistant", text, thinking, stats,
                                                       tool_calls=tool_calls or (), cut_off=cut_off)
                self.message_id = stored.id
                if stats is None:
                    self._store.writing.add(stored.id)
            else:
                stored = await self._store.update_message(self.message_id, text, thinking, stats,
                                                          tool_calls=tool_calls, cut_off=cut_off)
            if stats is not None:
                self._final = stored
            return stored


async def _keep(draft: _Draft, session_id: int, bus: EventBus) -> None:
    """Save a reply that ended early, as it stands, marked cut off."""
    try:
        await draft.finish(cut_off=True)
    except SmoltuiError as error:
        bus.publish(ReplyFailed(session_id, f"the reply so far was not saved: {error}"))


def _loads(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _to_chat(history: Sequence[StoredMessage], system_prompt: str) -> list[ChatMessage]:
    messages = [ChatMessage("system", system_prompt)] if system_prompt else []
    messages.extend(ChatMessage(m.role, m.content, m.thinking) for m in history)
    return messages
