"""The backend protocol: messages in, a stream of deltas and one stats record out.

Every runtime (llama.cpp, transformers, an OpenAI-compatible server, the scripted test backend)
implements :class:`Backend`. Generation runs off the event loop; ``stream`` is an async iterator the
caller can stop at any time by setting the :class:`CancelToken`.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    thinking: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    """The calls an assistant turn made, where the backend reported them as structured calls."""
    tool_call_id: str | None = None
    """For a ``tool`` turn: the id of the call this is the result of (when known)."""


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 1024
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0
    seed: int | None = None
    think: bool = False
    tools: Sequence[dict] | None = None
    json_schema: Mapping[str, Any] | None = None
    """Constrain the reply to JSON matching this schema (where the backend can)."""
    tool_choice: Literal["auto", "required"] = "auto"
    """``required``: the reply starts with a call (the model only picks which, and its arguments)."""
    constrain_tools: bool = True
    """Hold each tool call to the offered tools' schemas once the model opens one (where the
    backend can): a call then always parses and names a real tool."""


@dataclass(frozen=True)
class TextDelta:
    text: str
    kind: Literal["text"] = "text"


@dataclass(frozen=True)
class ThinkingDelta:
    text: str
    kind: Literal["thinking"] = "thinking"


@dataclass(frozen=True)
class ToolCallDelta:
    """One complete tool call the model made (emitted once, after all of its streamed fragments)."""

    id: str
    name: str
    arguments: str
    """The arguments as the model wrote them: a JSON object in text, not validated here."""
    raw: str = ""
    """The call's markup exactly as generated (``<tool_call>…</tool_call>``), where the model wrote
    it as text: stored in the history so the next prompt renders the same tokens."""
    error: str | None = None
    """Why the call could not be read (bad JSON, no name); the agent hands it back to the model."""
    kind: Literal["tool_call"] = "tool_call"


StopReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    ttft_s: float
    prefill_tok_s: float
    decode_tok_s: float
    context_used: int
    context_size: int
    total_s: float
    stop_reason: StopReason = "stop"

    @classmethod
    def measured(cls, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int, started: float,
                 first_token_at: float | None, ended: float, context_size: int,
                 stop_reason: StopReason) -> GenerationStats:
        """Stats from the clock readings of one local generation (``perf_counter`` seconds)."""
        first = first_token_at or ended
        ttft = first - started
        decode_s = ended - first
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            ttft_s=ttft,
            prefill_tok_s=(prompt_tokens - cached_tokens) / ttft if ttft > 0 else 0.0,
            decode_tok_s=(completion_tokens - 1) / decode_s if completion_tokens > 1 and decode_s > 0 else 0.0,
            context_used=prompt_tokens + completion_tokens,
            context_size=context_size,
            total_s=ended - started,
            stop_reason=stop_reason,
        )

    @property
    def new_prompt_tokens(self) -> int:
        """Prompt tokens this reply actually had to prefill (the rest came from the KV cache)."""
        return self.prompt_tokens - self.cached_tokens

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "ttft_s": round(self.ttft_s, 4),
            "prefill_tok_s": round(self.prefill_tok_s, 2),
            "decode_tok_s": round(self.decode_tok_s, 2),
            "context_used": self.context_used,
            "context_size": self.context_size,
            "total_s": round(self.total_s, 4),
            "stop_reason": self.stop_reason,
        }


@dataclass(frozen=True)
class Finished:
    stats: GenerationStats
    kind: Literal["done"] = "done"


StreamEvent = TextDelta | ThinkingDelta | ToolCallDelta | Finished


@dataclass
class CancelToken:
    """Set from any thread; the generating thread checks it between tokens."""

    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class LoadProgress:
    fraction: float
    message: str


ProgressCallback = Callable[[LoadProgress], None]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share (how much of a KV cache a prompt can keep)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@runtime_checkable
class Backend(Protocol):
    """What the orchestrator needs from a model runtime."""

    name: str
    """Short runtime name for the status bar ("llama.cpp", "scripted", ...)."""

    model_name: str
    """Human name of the loaded model."""

    @property
    def context_size(self) -> int: ...

    async def load(self, progress: ProgressCallback | None = None) -> None:
        """Load the model off the event loop; report progress as it goes."""

    async def count_tokens(self, messages: Sequence[ChatMessage], params: GenerationParams) -> int:
        """Tokens the rendered prompt for ``messages`` takes, generation prompt included."""

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, cancel: CancelToken
    ) -> AsyncIterator[StreamEvent]:
        """Yield text, thinking and tool-call deltas, then exactly one :class:`Finished`."""

    async def close(self) -> None:
        """Release the model."""
