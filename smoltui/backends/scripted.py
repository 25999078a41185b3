"""A backend that streams canned replies: for demos, screenshots and tests without a model.

Select it with ``--model scripted``. Each reply is split into word-sized tokens and streamed with a
small delay, exactly like a real backend would (thinking first when thinking is on).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    GenerationStats,
    LoadProgress,
    ProgressCallback,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
)
from smoltui.backends.tool_calls import ToolCallSplitter

_TOKEN = re.compile(r"\s*\S+|\s+")

DEFAULT_REPLIES = (
    "Hello! I am a **scripted** model: I stream canned replies so you can try smoltui without "
    "loading weights.\n\n- Press `ctrl+t` to toggle thinking\n- Press `esc` to stop a reply",
)


@dataclass(frozen=True)
class ScriptedReply:
    text: str
    thinking: str = ""


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


class ScriptedBackend:
    name = "scripted"

    def __init__(
        self,
        replies: Iterable[str | ScriptedReply] = DEFAULT_REPLIES,
        *,
        delay_s: float = 0.01,
        load_delay_s: float = 0.0,
        context_size: int = 4096,
        model_name: str = "scripted",
    ) -> None:
        items = [r if isinstance(r, ScriptedReply) else ScriptedReply(r) for r in replies]
        self._replies = itertools.cycle(items)
        self.delay_s = delay_s
        self.load_delay_s = load_delay_s
        self._context_size = context_size
        self.model_name = model_name
        self.prompts: list[list[ChatMessage]] = []

    @property
    def context_size(self) -> int:
        return self._context_size

    async def load(self, progress: ProgressCallback | None = None) -> None:
        steps = 4
        for step in range(1, steps + 1):
            await asyncio.sleep(self.load_delay_s / steps)
            if progress:
                progress(LoadProgress(step / steps, f"loading scripted model ({step}/{steps})"))

    async def count_tokens(self, messages: Sequence[ChatMessage], params: GenerationParams) -> int:
        return sum(len(tokenize(m.content)) + 4 for m in messages) + 2

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, cancel: CancelToken
    ) -> AsyncIterator[StreamEvent]:
        self.prompts.append(list(messages))
        reply = next(self._replies)
        started = time.perf_counter()
        prompt_tokens = await self.count_tokens(messages, params)
        first: float | None = None
        produced = 0
        stop = "stop"
        pieces: list[StreamEvent] = []
        if params.think and reply.thinking:
            pieces += [ThinkingDelta(t) for t in tokenize(reply.thinking)]
        pieces += [TextDelta(t) for t in tokenize(reply.text)]
        if params.tools:  # calls in the script come out as calls, as from a real model
            splitter = ToolCallSplitter()
            split: list[StreamEvent] = []
            for piece in pieces:
                split += splitter.feed(piece.text) if isinstance(piece, TextDelta) else [piece]
            pieces = split + splitter.flush()
        for piece in pieces:
            if cancel.cancelled:
                stop = "cancelled"
                break
            if produced >= params.max_tokens:
                stop = "length"
                break
            await asyncio.sleep(self.delay_s)
            if first is None:
                first = time.perf_counter() - started
            produced += 1
            yield piece
        total = time.perf_counter() - started
        ttft = first if first is not None else total
        decode_s = max(total - ttft, 1e-9)
        yield Finished(
            GenerationStats(
                prompt_tokens=prompt_tokens,
                completion_tokens=produced,
                cached_tokens=0,
                ttft_s=ttft,
                prefill_tok_s=prompt_tokens / max(ttft, 1e-9),
                decode_tok_s=(produced - 1) / decode_s if produced > 1 else 0.0,
                context_used=prompt_tokens + produced,
                context_size=self._context_size,
                total_s=total,
                stop_reason=stop,  # type: ignore[arg-type]
            )
        )

    async def close(self) -> None:
        return None
