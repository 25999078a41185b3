"""Every event the core publishes, and the one bus per core that fans them out.

Events are small frozen dataclasses with a ``kind``, holding plain data (no futures, no tools), so
they can be printed, stored or sent to another process as they are. Subscribers are plain callables
invoked on the event loop's thread; the TUI turns them into Textual messages, the CLI prints them.
Whatever must survive a restart is committed to the store before its event is published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from smoltui.backends.base import GenerationStats, ToolCallDelta
from smoltui.tools.base import ToolResult
from smoltui.tools.calls import ApprovalRequest, ToolCall

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelLoading:
    fraction: float
    message: str
    kind: Literal["model_loading"] = "model_loading"


@dataclass(frozen=True)
class ModelReady:
    model_name: str
    backend: str
    context_size: int
    load_s: float
    kind: Literal["model_ready"] = "model_ready"


@dataclass(frozen=True)
class ModelFailed:
    message: str
    kind: Literal["model_failed"] = "model_failed"


@dataclass(frozen=True)
class ReplyStarted:
    session_id: int
    user_message_id: int
    think: bool
    kind: Literal["reply_started"] = "reply_started"


@dataclass(frozen=True)
class TokenDelta:
    session_id: int
    text: str
    kind: Literal["token"] = "token"


@dataclass(frozen=True)
class ThinkingTokenDelta:
    session_id: int
    text: str
    kind: Literal["thinking"] = "thinking"


@dataclass(frozen=True)
class ReplyFinished:
    session_id: int
    message_id: int
    content: str
    thinking: str
    stats: GenerationStats
    tool_calls: tuple[ToolCallDelta, ...] = ()
    """Calls the model made in this turn (they run next, each announced on its own)."""
    kind: Literal["reply_finished"] = "reply_finished"


@dataclass(frozen=True)
class ReplyFailed:
    session_id: int
    message: str
    kind: Literal["reply_failed"] = "reply_failed"


@dataclass(frozen=True)
class ContextTrimmed:
    session_id: int
    dropped_messages: int
    context_size: int
    kind: Literal["context_trimmed"] = "context_trimmed"


@dataclass(frozen=True)
class ToolCallRequested:
    """The model asked for a tool (the call may be malformed: then ``error`` says how)."""

    session_id: int
    call_id: str
    name: str
    arguments: str
    error: str | None = None
    kind: Literal["tool_call_requested"] = "tool_call_requested"


@dataclass(frozen=True)
class ToolCallDone:
    """A requested call is over (ran, refused or invalid); its result is stored as a tool message."""

    session_id: int
    call_id: str
    name: str
    ok: bool
    summary: str
    message_id: int | None
    arguments: str | None = None
    """The arguments it ran with (JSON text) when a person edited them; None: as the model wrote."""
    kind: Literal["tool_call_done"] = "tool_call_done"


@dataclass(frozen=True)
class ToolStepLimit:
    """The model kept calling tools; the loop stopped after ``steps`` rounds."""

    session_id: int
    steps: int
    kind: Literal["tool_step_limit"] = "tool_step_limit"


# -- approvals -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalNeeded:
    """A call waits for a person: answer it through the gate (``ApprovalGate.answer``)."""

    request: ApprovalRequest
    kind: Literal["approval_needed"] = "approval_needed"

    @property
    def call(self) -> ToolCall:
        return self.request.call


@dataclass(frozen=True)
class ToolCallFinished:
    """A call is over (run, refused, or failed before running); its audit row is already written."""

    call: ToolCall
    result: ToolResult
    decision: str
    decided_by: str
    audit_id: int | None
    kind: Literal["tool_call_finished"] = "tool_call_finished"


@dataclass(frozen=True)
class ToolsChanged:
    """The tools on offer changed (an MCP server started, stopped or changed its list)."""

    origin: str
    kind: Literal["tools_changed"] = "tools_changed"


# -- workflow runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStateChanged:
    run_id: str
    state: str
    kind: Literal["run_state"] = "run_state"


@dataclass(frozen=True)
class TaskStateChanged:
    run_id: str
    task_id: str
    state: str
    attempt: int = 0
    error: str | None = None
    kind: Literal["task_state"] = "task_state"


@dataclass(frozen=True)
class TaskLog:
    run_id: str
    task_id: str | None
    message: str
    event_id: int = 0
    kind: Literal["task_log"] = "task_log"


@dataclass(frozen=True)
class TaskToken:
    """A streamed piece of an LLM task's reply (not stored: the finished output is)."""

    run_id: str
    task_id: str
    text: str
    thinking: bool = False
    kind: Literal["task_token"] = "task_token"


@dataclass(frozen=True)
class RunFinished:
    """A run this process drove has ended (or crashed: then ``error`` says why)."""

    run_id: str
    state: str
    error: str | None = None
    kind: Literal["run_finished"] = "run_finished"


@dataclass(frozen=True)
class RunsChanged:
    """Another process changed runs in the store, or added to their log, or died while driving
    them (the watcher noticed): views showing those runs read them again."""

    run_ids: tuple[str, ...]
    kind: Literal["runs_changed"] = "runs_changed"


@dataclass(frozen=True)
class WorkflowsChanged:
    """A workflow file appeared, went or was edited in one of the watched folders."""

    kind: Literal["workflows_changed"] = "workflows_changed"


RunEvent = RunStateChanged | TaskStateChanged | TaskLog | TaskToken

Event = (
    ModelLoading
    | ModelReady
    | ModelFailed
    | ReplyStarted
    | TokenDelta
    | ThinkingTokenDelta
    | ReplyFinished
    | ReplyFailed
    | ContextTrimmed
    | ToolCallRequested
    | ToolCallDone
    | ToolStepLimit
    | ApprovalNeeded
    | ToolCallFinished
    | ToolsChanged
    | RunStateChanged
    | TaskStateChanged
    | TaskLog
    | TaskToken
    | RunFinished
    | RunsChanged
    | WorkflowsChanged
)

Subscriber = Callable[[Event], None]


class Publisher(Protocol):
    def publish(self, event: Any) -> None: ...


@dataclass
class EventBus:
    """One per core: every service publishes here, every front end subscribes here."""

    _subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(subscriber)
        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # a broken view must not stop the reply
                log.exception("event subscriber failed on %s", event.kind)
