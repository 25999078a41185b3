"""Conversations kept in RAM while the one llama.cpp context serves another.

One model serves every chat, the planner and the workflows' LLM tasks, and its context holds one
token sequence at a time. Without this, opening another chat, drafting a plan or running a workflow
task throws the current chat's KV cache away, and the next message in that chat prefills the whole
conversation again: 2,000 tokens of SmolLM3-3B on two CPU cores is almost a minute.

So before a prompt displaces what the context holds, the backend copies that sequence's KV state here
(``llama_state_seq_get_data``: ~74 KB a token for SmolLM3-3B, ~23 KB for SmolLM2-135M), and before it
prefills a prompt, it brings back the kept state that shares the longest prefix with it. Bounded by
bytes, least recently used first out; a kept sequence that is a prefix of a newer one is dropped, as
the newer holds it.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smoltui.backends.base import common_prefix

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    tokens: tuple[int, ...]
    state: bytes

    @property
    def size(self) -> int:
        return len(self.state)


class KVSnapshots:
    """An LRU of token sequences and their KV states for one llama context, bounded by ``budget_bytes``."""

    def __init__(self, budget_bytes: int, *, min_tokens: int = 64) -> None:
        self.budget_bytes = budget_bytes
        self.min_tokens = min_tokens
        """Shorter sequences are not worth a copy: they prefill in a moment (or come from the disk cache)."""
        self._kept: list[Snapshot] = []  # least recently used first

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def size(self) -> int:
        return sum(s.size for s in self._kept)

    @property
    def snapshots(self) -> tuple[Snapshot, ...]:
        """Least recently used first."""
        return tuple(self._kept)

    def best(self, prompt: Sequence[int]) -> tuple[Snapshot | None, int]:
        """The kept state sharing the longest prefix with ``prompt``, and that length."""
        best, length = None, 0
        for snapshot in self._kept:
            shared = common_prefix(snapshot.tokens, prompt)
            if shared > length:
                best, length = snapshot, shared
        return best, length

    def add(self, snapshot: Snapshot) -> None:
        if snapshot.size > self.budget_bytes:
            return
        tokens = snapshot.tokens
        # A kept sequence the new one extends (the same chat, earlier) is held by the new one.
        self._kept = [s for s in self._kept if s.tokens != tokens[: len(s.tokens)]]
        if any(s.tokens[: len(tokens)] == tokens for s in self._kept):
            return  # already held by a longer one
        self._kept.append(snapshot)
        while self.size > self.budget_bytes:
            self._kept.pop(0)

    def touch(self, snapshot: Snapshot) -> None:
        """Mark ``snapshot`` as just used."""
        # by identity: comparing two states byte by byte would cost as much as copying one
        self._kept = [s for s in self._kept if s is not snapshot]
        self._kept.append(snapshot)

    def clear(self) -> None:
        self._kept.clear()

    # -- llama.cpp -----------------------------------------------------------------------------------

    def keep_current(self, llm: Llama) -> bool:
        """Copy the sequence the context holds now (if long enough); False when there was nothing to keep."""
        import llama_cpp

        n = llm.n_tokens
        if n < self.min_tokens:
            return False
        tokens = tuple(int(t) for t in llm.input_ids[:n])
        if any(s.tokens[:n] == tokens for s in self._kept):
            return False  # kept already (restored from here, or kept by an earlier switch)
        ctx = llm._ctx.ctx
        # Positions past n_tokens may still hold a dropped tail; keep exactly the sequence we name.
        llm._ctx.kv_cache_seq_rm(0, n, -1)
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        if size == 0 or size > self.budget_bytes:
            return False
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        if written == 0:
            log.warning("llama.cpp could not copy the KV state of %d tokens", n)
            return False
        self.add(Snapshot(tokens, bytes(buffer)[:written]))
        return True

    def restore(self, llm: Llama, snapshot: Snapshot) -> bool:
        """Make the context hold ``snapshot``'s sequence; False (and an empty context) if llama.cpp refused it."""
        import llama_cpp

        llm.reset()
        llm._ctx.kv_cache_clear()
        buffer = (ctypes.c_uint8 * snapshot.size).from_buffer_copy(snapshot.state)
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buffer, snapshot.size, 0) == 0:
            log.warning("llama.cpp refused a kept KV state of %d tokens; dropping it", len(snapshot.tokens))
            llm._ctx.kv_cache_clear()
            self._kept = [s for s in self._kept if s is not snapshot]
            return False
        n = len(snapshot.tokens)
        llm.input_ids[:n] = snapshot.tokens
        llm.n_tokens = n
        # The logits llama-cpp-python holds are not this sequence's: make generate() evaluate again.
        if hasattr(llm, "_requires_eval"):
            llm._requires_eval = True
        self.touch(snapshot)
        return True
