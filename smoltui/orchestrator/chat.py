"""Chat sessions: turn a user's message into a streamed, persisted reply.

The TUI and the one-shot CLI drive the same :class:`ChatService`. It loads the backend, keeps the
prompt inside the model's context (trimming the oldest turns with a visible notice), streams the
reply as events and commits both messages to the store before announcing them.
"""

from __future__ import annotations

import asyncio
import json
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
            await self.model.wait_settled()
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

    async def _call(self, session_id: int, message_id: int, call: ToolCallDelta) -> int | None:
        """Run one call of the reply ``message_id``, store its result as a tool message and settle
        the call's row; the tool message's id, or None to stop."""
        assert self.gate is not None
        self.bus.publish(ToolCallRequested(session_id, call.id, call.name, call.arguments, call.error))
        artifacts = Path(self.store.path).parent / "chat-artifacts" / str(session_id)
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
        except SmoltuiError as error:
            self.bus.publish(ReplyFailed(session_id, str(error)))
            return None
        finally:
            self._cancel = None
        if stats is None:  # a backend that ended without stats is a bug, but keep the text
            stats = GenerationStats(0, 0, 0, 0.0, 0.0, 0.0, 0, self.backend.context_size, 0.0, "cancelled")
        if stats.stop_reason == "cancelled":
            calls = []  # a call cut off by the user is not run
        reply_text, reply_thinking = "".join(content), "".join(thinking)
        try:
            stored = await self.store.add_message(
                session_id,
                "assistant",
                reply_text,
                reply_thinking or None,
                {**stats.as_dict(), "think": params.think},  # the mode is stored with the message
                tool_calls=[MessageToolCall(0, position, call.id, call.name, call.arguments, call.error)
                            for position, call in enumerate(calls)],
            )
        except SmoltuiError as error:
            # The streamed text is still on screen; say plainly that it is not in the history.
            self.bus.publish(ReplyFailed(session_id, f"the reply was not saved: {error}"))
            return None
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
