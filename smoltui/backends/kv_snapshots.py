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

:class:`SnapshotFolder` carries the newest few across runs: written when the backend closes, read
back when a chat's next prompt would otherwise prefill a long stretch of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
        if any(s is snapshot for s in self._kept):
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
        self.add(Snapshot(tokens, ctypes.string_at(buffer, written)))  # one copy, not two
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


class SnapshotFolder:
    """Conversations kept across runs: the KV state of a chat written when the backend closes, and
    read back when the chat's next prompt comes, so a long chat reopened tomorrow does not prefill
    again. Each is two files named by the hash of its tokens: ``.kvconv`` (the state) and
    ``.kvtokens`` (the tokens, int32). Bounded by bytes, least recently used first out. A file that
    does not read back (a full disk cut it short, another llama.cpp version wrote it) is deleted.
    """

    def __init__(self, folder: Path, key: str, budget_bytes: int, *, min_tokens: int = 256,
                 per_close: int = 4) -> None:
        self.folder = folder
        self.key = key
        """Model and runtime identity: a state only fits the model, context size and llama.cpp that made it."""
        self.budget_bytes = budget_bytes
        self.min_tokens = min_tokens
        """Shorter chats prefill in seconds: not worth the disk."""
        self.per_close = per_close
        """At most this many conversations written per close (the most recently used), so closing stays quick."""

    def _paths(self, tokens: Sequence[int]) -> tuple[Path, Path]:
        digest = hashlib.sha256(array("i", tokens).tobytes()).hexdigest()[:24]
        stem = self.folder / f"{self.key}-{digest}"
        return stem.with_suffix(".kvconv"), stem.with_suffix(".kvtokens")

    def _token_files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.key}-*.kvtokens"))

    @staticmethod
    def _read_tokens(path: Path) -> tuple[int, ...] | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) % 4:
            return None
        tokens = array("i")
        tokens.frombytes(data)
        return tuple(tokens)

    def token_lists(self) -> list[tuple[Path, tuple[int, ...]]]:
        """Each saved conversation's token file and tokens."""
        found = []
        for path in self._token_files():
            tokens = self._read_tokens(path)
            if tokens:
                found.append((path, tokens))
        return found

    def best(self, prompt: Sequence[int]) -> tuple[Path | None, int]:
        """The saved conversation sharing the longest prefix with ``prompt`` (its token file), and that length."""
        best, length = None, 0
        for path, tokens in self.token_lists():
            shared = common_prefix(tokens, prompt)
            if shared > length:
                best, length = path, shared
        return best, length

    def load(self, token_file: Path) -> Snapshot | None:
        tokens = self._read_tokens(token_file)
        state_file = token_file.with_suffix(".kvconv")
        try:
            state = state_file.read_bytes()
        except OSError:
            state = b""
        if not tokens or not state or self._paths(tokens)[1] != token_file:
            log.warning("discarding an unreadable saved conversation %s", state_file)
            self._delete(token_file)
            return None
        now = time.time()
        for path in (token_file, state_file):
            with contextlib.suppress(OSError):
                os.utime(path, (now, now))  # most recently used files survive pruning
        return Snapshot(tokens, state)

    def save(self, snapshots: Sequence[Snapshot]) -> int:
        """Write ``snapshots`` (least recently used first; the newest ``per_close`` of them, those long
        enough); returns how many were written. A full disk costs the copies, never the chat."""
        chosen = [s for s in snapshots if len(s.tokens) >= self.min_tokens][-self.per_close:]
        if not chosen:
            return 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            log.warning("cannot keep conversations in %s: %s", self.folder, error)
            return 0
        saved = self.token_lists()
        written = 0
        for snapshot in chosen:
            state_file, token_file = self._paths(snapshot.tokens)
            n = len(snapshot.tokens)
            if any(tokens[:n] == snapshot.tokens for _, tokens in saved):
                # This conversation, or a longer one it starts, is on disk already: only mark it used.
                for path, tokens in saved:
                    if tokens[:n] == snapshot.tokens:
                        with contextlib.suppress(OSError):
                            os.utime(path)
                            os.utime(path.with_suffix(".kvconv"))
                continue
            try:
                _write_atomically(state_file, snapshot.state)
                _write_atomically(token_file, array("i", snapshot.tokens).tobytes())
            except OSError as error:
                log.warning("could not save a conversation to %s: %s", state_file, error)
                self._delete(token_file)
                continue
            written += 1
            # An earlier copy of the same chat is held by this one.
            for path, tokens in saved:
                if snapshot.tokens[: len(tokens)] == tokens:
                    self._delete(path)
        self.prune()
        return written

    def prune(self) -> None:
        """Delete the least recently used conversations past the budget (and orphaned halves)."""
        pairs = []
        for token_file in self._token_files():
            state_file = token_file.with_suffix(".kvconv")
            try:
                size = state_file.stat().st_size + token_file.stat().st_size
                used = max(state_file.stat().st_mtime, token_file.stat().st_mtime)
            except OSError:
                self._delete(token_file)
                continue
            pairs.append((used, size, token_file))
        for state_file in self.folder.glob(f"{self.key}-*.kvconv"):
            if not state_file.with_suffix(".kvtokens").exists():
                state_file.unlink(missing_ok=True)
        total = sum(size for _, size, _ in pairs)
        for _, size, token_file in sorted(pairs):
            if total <= self.budget_bytes:
                break
            self._delete(token_file)
            total -= size

    @staticmethod
    def _delete(token_file: Path) -> None:
        token_file.with_suffix(".kvconv").unlink(missing_ok=True)
        token_file.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
