"""Events the orchestrator publishes and the bus that fans them out.

Events are small frozen dataclasses with a ``kind``. Subscribers are plain callables invoked on the
event loop's thread; the TUI turns them into Textual messages, the CLI prints them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from smoltui.backends.base import GenerationStats, ToolCallDelta

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
    kind: Literal["tool_call_done"] = "tool_call_done"


@dataclass(frozen=True)
class ToolStepLimit:
    """The model kept calling tools; the loop stopped after ``steps`` rounds."""

    session_id: int
    steps: int
    kind: Literal["tool_step_limit"] = "tool_step_limit"


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
)

Subscriber = Callable[[Event], None]


@dataclass
class EventBus:
    _subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # a broken view must not stop the reply
                log.exception("event subscriber failed on %s", event.kind)
