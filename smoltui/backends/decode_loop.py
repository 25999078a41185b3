"""The decode loop of the local runtimes: what a reply is, written once.

llama.cpp and transformers differ in how a token is evaluated and picked, not in what a reply is made
of. :func:`decode` holds the part they share:

* three phases. Free text; a tool call, held by a constraint from just after ``<tool_call>`` to the
  end of the call's JSON (tools offered with ``constrain_tools``); a JSON reply, held to
  ``GenerationParams.json_schema`` from the first token to the end of the value.
  ``tool_choice="required"`` writes the opening tag after the prompt and starts in the call phase.
* A token that completes the opening tag and runs on into the call (SmolLM2's ``></``) is taken back
  and replaced by the tag's end, so the constraint writes the whole call. When the call's grammar is
  complete (the model picks end-of-generation), ``"\\n</tool_call>"`` is written for it and free text
  resumes.
* Text streams without splitting a character, through the think parser and the tool-call splitter.
* The reply ends at end-of-generation, at ``max_tokens`` or a full context (``"length"``), or when the
  cancel token is set (checked after every token); one :class:`Finished` with measured stats follows.

A runtime supplies prefill, step and sampling through :class:`Runtime`. Everything around one reply
(KV cache reuse, prompt states on disk, errors that leave a cache in an unknown state) stays in the
backend, around the call to :func:`decode`.
"""

from __future__ import annotations

import codecs
import enum
import logging
import time
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any, Protocol

from smoltui.backends.base import (
    CancelToken,
    Finished,
    GenerationParams,
    GenerationStats,
    StopReason,
    TextDelta,
)
from smoltui.backends.think_parser import ThinkParser
from smoltui.backends.threaded import Emit
from smoltui.backends.tool_calls import CLOSE, OPEN, ToolCallSplitter, flush_calls, route

log = logging.getLogger(__name__)


class Constraint(Protocol):
    """One constrained stretch of decoding (a call's JSON, a JSON reply), from its grammar's start."""

    def advance(self, token: int) -> bool:
        """Take the picked token; False when the grammar refuses it (the loop then decodes on freely)."""
        ...

    @property
    def stopped(self) -> bool:
        """Nothing but end-of-generation may follow (a runtime that cannot tell says False)."""
        ...

    @property
    def error(self) -> str | None: ...


Grammar = Callable[[], Constraint | None]
"""Hands out a fresh :class:`Constraint` for each stretch it holds (None: this one cannot be held)."""


class Detokenizer(Protocol):
    """Token ids in, text out, never half a character."""

    def add(self, token: int) -> str: ...

    def flush(self) -> str:
        """The reply ended: whatever is still held back."""
        ...


class Runtime(Protocol):
    """What :func:`decode` needs from a model runtime; every call is made on the runtime's one thread.

    The runtime may defer work (llama.cpp evaluates inside its ``generate()``): it only has to have
    evaluated everything prefilled and stepped by the time :meth:`pick` returns.
    """

    context_size: int
    end_ids: Container[int]
    """End-of-generation tokens: never part of the reply."""

    def prefill(self, tokens: Sequence[int]) -> bool:
        """Evaluate ``tokens`` after all evaluated so far. False: cancelled part way (a long prompt)."""
        ...

    def step(self, token: int) -> None:
        """Evaluate the token :meth:`pick` just returned."""
        ...

    def pick(self, constraint: Constraint | None) -> int:
        """Sample the next token after what was evaluated, only from those ``constraint`` allows."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Markup the loop writes for the model (tags), special tokens included."""
        ...

    def detokenizer(self) -> Detokenizer: ...

    def call_grammar(self, tools: Sequence[Mapping[str, Any]]) -> Grammar | None:
        """What holds a call to one of ``tools``; None: calls are decoded freely."""
        ...

    def json_grammar(self, schema: Mapping[str, Any]) -> Grammar | None:
        """What holds a whole reply to ``schema``; None: the reply is decoded freely."""
        ...

    def close(self) -> None:
        """The reply is over (normally or not)."""
        ...


class Phase(enum.Enum):
    FREE = "free"
    CALL = "call"
    JSON = "json"


def decode(
    runtime: Runtime,
    params: GenerationParams,
    cancel: CancelToken,
    emit: Emit,
    *,
    prompt: Sequence[int],
    cached: int,
    started: float,
    in_thinking: bool = False,
) -> None:
    """Decode one reply after ``prompt`` (its first ``cached`` tokens already evaluated); ``emit`` its
    deltas, then one :class:`Finished`. ``in_thinking``: the prompt itself ends inside ``<think>``."""
    try:
        _Reply(runtime, params, cancel, emit, prompt_tokens=len(prompt), in_thinking=in_thinking).run(
            list(prompt[cached:]), cached=cached, started=started
        )
    finally:
        runtime.close()


class _Reply:
    """The state of one reply: phase, constraint, text streams, counters."""

    def __init__(self, runtime: Runtime, params: GenerationParams, cancel: CancelToken, emit: Emit, *,
                 prompt_tokens: int, in_thinking: bool) -> None:
        self.runtime = runtime
        self.params = params
        self.cancel = cancel
        self.emit = emit
        self.tools = list(params.tools or ())
        self.splitter = ToolCallSplitter() if self.tools else None
        self.parser = ThinkParser(start_in_thinking=in_thinking)
        self.text = runtime.detokenizer()
        self.prompt_tokens = prompt_tokens
        self.length = prompt_tokens
        """Tokens the context holds once everything so far is evaluated (the cut-off counts these)."""
        self.completion = 0
        # Asked for up front: a schema the runtime cannot hold fails the reply before it starts.
        self.call_grammar = runtime.call_grammar(self.tools) if self.tools and params.constrain_tools else None
        self.json_grammar = runtime.json_grammar(params.json_schema) if params.json_schema is not None else None
        self.phase = Phase.FREE
        self.constraint: Constraint | None = None

    def run(self, feed: list[int], *, cached: int, started: float) -> None:
        runtime, params = self.runtime, self.params
        stop: StopReason = "stop"
        first_at: float | None = None
        if self.splitter is not None and params.tool_choice == "required":
            opening = runtime.tokenize(OPEN)
            feed += opening
            self.length += len(opening)
            self._deliver([TextDelta(OPEN)])
            self._enter(Phase.CALL, self.call_grammar)
        elif self.json_grammar is not None:
            self._enter(Phase.JSON, self.json_grammar)
        evaluated = runtime.prefill(feed)
        while evaluated:
            token = runtime.pick(self.constraint)
            if first_at is None:
                first_at = time.perf_counter()
            if self.cancel.cancelled:
                stop = "cancelled"
                break
            if token in runtime.end_ids:
                if self.phase is not Phase.CALL:
                    break  # the reply (or its JSON value: the grammar allowed the end) is complete
                closing = self._close_call()
                if self._cut_off():
                    stop = "length"
                    break
                evaluated = runtime.prefill(closing)
                continue
            if self.constraint is not None and not self.constraint.advance(token):
                what = "JSON-schema" if self.phase is Phase.JSON else "tool-call"
                log.warning("the %s constraint failed (%s); decoding on unconstrained", what, self.constraint.error)
                self._enter(Phase.FREE)
            self.completion += 1
            self.length += 1
            piece = self.text.add(token)
            self._deliver(self.parser.feed(piece) if piece else ())
            if self.phase is Phase.JSON and self.constraint is not None and self.constraint.stopped:
                break  # the JSON value is complete and nothing may follow it
            if self._cut_off():
                stop = "length"
                break
            splitter = self._new_call()
            if splitter is not None:
                # A token that ran on past the tag (not evaluated yet) is taken back and replaced by
                # the tag's end, so the grammar holds the call from its first character.
                tag_end = splitter.take_back_run_on(piece)
                if tag_end is not None or splitter.pending_call_text.strip() == "":
                    self._enter(Phase.CALL, self.call_grammar)
                if tag_end is not None:
                    replacement = runtime.tokenize(tag_end)
                    self.length += len(replacement) - 1
                    evaluated = runtime.prefill(replacement)
                    continue
            runtime.step(token)
        else:
            stop = "cancelled"  # during a prefill
        self._deliver(self.parser.feed(self.text.flush()) + self.parser.flush())
        flush_calls(self.splitter, self.emit, stop=stop, max_tokens=params.max_tokens)
        self.emit(Finished(GenerationStats.measured(
            prompt_tokens=self.prompt_tokens, cached_tokens=cached, completion_tokens=self.completion,
            started=started, first_token_at=first_at, ended=time.perf_counter(),
            context_size=runtime.context_size, stop_reason=stop,
        )))

    def _enter(self, phase: Phase, grammar: Grammar | None = None) -> None:
        """Switch phase; a constrained phase the runtime cannot hold decodes as free text."""
        self.constraint = grammar() if grammar is not None and phase is not Phase.FREE else None
        self.phase = phase if self.constraint is not None else Phase.FREE
        if self.splitter is not None:
            # While a grammar holds the call, its end is the grammar's, not a `</tool_call>` in a string.
            self.splitter.constrained = self.phase is Phase.CALL

    def _close_call(self) -> list[int]:
        """The grammar allowed the end: the call's JSON is complete. Write the closing tag for the
        model (the tokens it must evaluate are returned) and let it write on freely."""
        closing = self.runtime.tokenize("\n" + CLOSE)
        self._enter(Phase.FREE)
        self._deliver(self.parser.feed("\n" + CLOSE))
        self.completion += len(closing)
        self.length += len(closing)
        return closing

    def _new_call(self) -> ToolCallSplitter | None:
        """The splitter, when the model has opened a call in free text that a grammar should hold."""
        if self.call_grammar is None or self.phase is not Phase.FREE:
            return None
        return self.splitter if self.splitter is not None and self.splitter.in_call else None

    def _cut_off(self) -> bool:
        # One slot of the context stays free: the last picked token is evaluated before the next pick.
        return self.completion >= self.params.max_tokens or self.length >= self.runtime.context_size - 1

    def _deliver(self, deltas: Sequence[Any]) -> None:
        route(deltas, self.splitter, self.emit)


class ByteDetokenizer:
    """Text from runtimes that give each token's bytes (llama.cpp): UTF-8 decoded incrementally."""

    def __init__(self, piece: Callable[[int], bytes]) -> None:
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token: int) -> str:
        return self._decoder.decode(self._piece(token))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class TextDetokenizer:
    """Text from runtimes that only decode whole id sequences (a transformers tokenizer): the text a
    token adds is the difference of two decodes, released once it does not end in half a character
    (and so never splits a merge or a space a tokenizer's decoder adds between tokens)."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return after[len(before) :]
