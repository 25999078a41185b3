"""The one decode loop, driven by a scripted runtime: what it asks the runtime to evaluate, under which
constraint it picks, and what the consumer gets, phase by phase.

The real-model tests (tests/test_constrained_tool_calls.py, the backend tests) prove the replies; these
pin down the protocol the two runtimes rely on: a run-on token is never evaluated, the closing tag is
evaluated before free text resumes, a cancelled prefill picks nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from smoltui.backends.base import (
    CancelToken,
    Finished,
    GenerationParams,
    GenerationStats,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from smoltui.backends.decode_loop import ByteDetokenizer, decode

EOG = "<eog>"
# Byte pieces as a BPE vocabulary has them: whole tags, a run-on `></`, and "é" cut between two tokens.
PIECES = [EOG.encode(), b"<tool_call>", b"</tool_call>", b"<think>", b"</think>", b"></", b"\xc3", b"\xa9",
          *(bytes([c]) for c in range(32, 127)), b"\n"]
IDS = {piece: i for i, piece in enumerate(PIECES)}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def tokens(text: str | bytes) -> list[int]:
    """Longest pieces first, as a tokenizer would."""
    data = text.encode() if isinstance(text, str) else text
    out, at = [], 0
    while at < len(data):
        piece = max((p for p in PIECES if data.startswith(p, at)), key=len)
        out.append(IDS[piece])
        at += len(piece)
    return out


class Held:
    """A scripted constraint: ``stop_after`` tokens make it complete; ``refuse`` is a piece it rejects."""

    def __init__(self, kind: str, stop_after: int | None = None, refuse: bytes | None = None) -> None:
        self.kind = kind
        self.taken: list[int] = []
        self._stop_after = stop_after
        self._refuse = refuse
        self.error: str | None = None

    def advance(self, token: int) -> bool:
        if self._refuse is not None and PIECES[token] == self._refuse:
            self.error = "refused"
            return False
        self.taken.append(token)
        return True

    @property
    def stopped(self) -> bool:
        return self._stop_after is not None and len(self.taken) >= self._stop_after


class Scripted:
    """A runtime whose picks come from a script per phase ("free", "call", "json"), like a model's."""

    def __init__(self, script: Mapping[str, Sequence[int]], *, context_size: int = 4096,
                 json_stop_after: int | None = None, refuse: bytes | None = None,
                 cancel_prefill: bool = False, cancel: CancelToken | None = None, cancel_at: int = -1) -> None:
        self.script = {kind: list(picks) for kind, picks in script.items()}
        self.context_size = context_size
        self.end_ids = {IDS[EOG.encode()]}
        self.log: list[tuple[str, Any]] = []
        self.constraints: list[Held] = []
        self.closed = False
        self._json_stop_after = json_stop_after
        self._refuse = refuse
        self._cancel_prefill = cancel_prefill
        self._cancel, self._cancel_at = cancel, cancel_at

    def prefill(self, tokens: Sequence[int]) -> bool:
        self.log.append(("prefill", b"".join(PIECES[t] for t in tokens)))
        return not self._cancel_prefill

    def step(self, token: int) -> None:
        self.log.append(("step", PIECES[token]))

    def pick(self, constraint: Any) -> int:
        kind = constraint.kind if constraint is not None else "free"
        self.log.append(("pick", kind))
        if self._cancel is not None and sum(1 for entry in self.log if entry[0] == "pick") == self._cancel_at:
            self._cancel.cancel()
        return self.script[kind].pop(0)

    def tokenize(self, text: str) -> list[int]:
        return tokens(text)

    def detokenizer(self) -> ByteDetokenizer:
        return ByteDetokenizer(lambda token: PIECES[token])

    def call_grammar(self, tools: Sequence[Mapping[str, Any]]) -> Any:
        return lambda: self._held("call", refuse=self._refuse)

    def json_grammar(self, schema: Mapping[str, Any]) -> Any:
        return lambda: self._held("json", stop_after=self._json_stop_after, refuse=self._refuse)

    def _held(self, kind: str, **options: Any) -> Held:
        self.constraints.append(Held(kind, **options))
        return self.constraints[-1]

    def close(self) -> None:
        self.closed = True


PROMPT = [IDS[b"x"]] * 6


def run(runtime: Scripted, params: GenerationParams, cancel: CancelToken | None = None,
        cached: int = 2) -> tuple[list, GenerationStats]:
    events: list = []
    decode(runtime, params, cancel or CancelToken(), events.append, prompt=PROMPT, cached=cached, started=0.0)
    assert isinstance(events[-1], Finished) and not any(isinstance(e, Finished) for e in events[:-1])
    return events[:-1], events[-1].stats


def text_of(events: list, kind: type = TextDelta) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


def test_free_text_streams_whole_characters_through_the_think_parser() -> None:
    reply = tokens("<think>\nhm\n</think>\nCaf\xc3\xa9!".encode("latin-1")) + tokens(EOG)
    runtime = Scripted({"free": reply})
    events, stats = run(runtime, GenerationParams(max_tokens=50))
    assert text_of(events, ThinkingDelta) == "hm" and text_of(events) == "Café!"
    assert "\ufffd" not in "".join(e.text for e in events)  # "é" came in two tokens
    # the uncached prompt is prefilled once; every picked token but the end is evaluated, in order
    assert runtime.log[0] == ("prefill", b"xxxx")
    assert [entry for entry in runtime.log if entry[0] == "step"] == [("step", PIECES[t]) for t in reply[:-1]]
    assert (stats.prompt_tokens, stats.cached_tokens, stats.completion_tokens) == (6, 2, len(reply) - 1)
    assert stats.stop_reason == "stop" and runtime.closed


def test_a_required_call_is_held_from_the_start_and_the_tag_is_closed_for_the_model() -> None:
    body = '{"name": "f", "arguments": {}}'
    runtime = Scripted({"call": tokens(body) + tokens(EOG), "free": tokens(" ok") + tokens(EOG)})
    events, stats = run(runtime, GenerationParams(max_tokens=80, tools=TOOLS, tool_choice="required"))
    (call,) = [e for e in events if isinstance(e, ToolCallDelta)]
    assert call.raw == f"<tool_call>{body}\n</tool_call>" and call.error is None
    assert text_of(events) == " ok"
    assert runtime.log[0] == ("prefill", b"xxxx<tool_call>")  # the tag goes after the prompt
    picks = [entry[1] for entry in runtime.log if entry[0] == "pick"]
    assert picks == ["call"] * (len(tokens(body)) + 1) + ["free"] * 4
    # the end of the grammar is never evaluated: the closing tag is, before free text resumes
    closing = runtime.log.index(("prefill", b"\n</tool_call>"))
    assert runtime.log[closing - 1] == ("pick", "call") and runtime.log[closing + 1] == ("pick", "free")
    assert stats.completion_tokens == len(tokens(body)) + len(tokens("\n</tool_call>")) + len(tokens(" ok"))


def test_a_token_running_on_past_the_opening_tag_is_taken_back_before_it_is_evaluated() -> None:
    free = tokens("Hi <tool_call") + [IDS[b"></"]]
    runtime = Scripted({"free": free, "call": tokens('{"name": "f", "arguments": {}}') + tokens(EOG)})
    runtime.script["free"] += tokens(EOG)  # after the call
    events, _ = run(runtime, GenerationParams(max_tokens=80, tools=TOOLS))
    (call,) = [e for e in events if isinstance(e, ToolCallDelta)]
    assert call.raw.startswith('<tool_call>{"name"') and call.error is None
    assert text_of(events) == "Hi "
    assert ("step", b"></") not in runtime.log
    taken_back = runtime.log.index(("prefill", b">"))
    assert runtime.log[taken_back + 1] == ("pick", "call")


def test_a_tag_written_whole_is_evaluated_and_the_call_held_after_it() -> None:
    runtime = Scripted({"free": tokens("<tool_call>") + tokens(EOG),
                        "call": tokens('{"name": "f", "arguments": {}}') + tokens(EOG)})
    events, _ = run(runtime, GenerationParams(max_tokens=80, tools=TOOLS))
    assert [e.name for e in events if isinstance(e, ToolCallDelta)] == ["f"]
    tag = runtime.log.index(("step", b"<tool_call>"))
    assert runtime.log[tag + 1] == ("pick", "call")


def test_without_constrain_tools_the_call_is_written_freely() -> None:
    runtime = Scripted({"free": tokens('<tool_call>{"name": "f"}</tool_call>') + tokens(EOG)})
    events, _ = run(runtime, GenerationParams(max_tokens=80, tools=TOOLS, constrain_tools=False))
    assert [e.name for e in events if isinstance(e, ToolCallDelta)] == ["f"]
    assert not runtime.constraints


def test_a_json_reply_ends_when_its_value_is_complete() -> None:
    value = '{"a": 1}'
    runtime = Scripted({"json": tokens(value) + tokens("garbage")}, json_stop_after=len(tokens(value)))
    events, stats = run(runtime, GenerationParams(max_tokens=80, json_schema={"type": "object"}))
    assert json.loads(text_of(events)) == {"a": 1}
    assert stats.stop_reason == "stop" and stats.completion_tokens == len(tokens(value))


def test_a_refused_token_drops_the_constraint_and_decoding_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    runtime = Scripted({"json": tokens('{"a": ?'), "free": tokens("!") + tokens(EOG)}, refuse=b"?")
    with caplog.at_level(logging.WARNING):
        events, stats = run(runtime, GenerationParams(max_tokens=80, json_schema={"type": "object"}))
    assert text_of(events) == '{"a": ?!'
    assert "JSON-schema constraint failed (refused)" in caplog.text
    assert runtime.log[-1] == ("pick", "free") and stats.stop_reason == "stop"


def test_max_tokens_inside_a_call_cuts_it_off_and_says_so() -> None:
    runtime = Scripted({"call": tokens('{"name": "f", "arguments": {"q": "aaaaaaaa"}}')})
    events, stats = run(runtime, GenerationParams(max_tokens=12, tools=TOOLS, tool_choice="required"))
    (call,) = [e for e in events if isinstance(e, ToolCallDelta)]
    assert stats.stop_reason == "length" and stats.completion_tokens == 12
    assert call.error is not None and "limit of 12 tokens" in call.error


def test_the_closing_tag_counts_against_max_tokens() -> None:
    body = tokens('{"name": "f", "arguments": {}}')
    closing = len(tokens("\n</tool_call>"))
    runtime = Scripted({"call": body + tokens(EOG), "free": tokens("more")})
    events, stats = run(runtime, GenerationParams(max_tokens=len(body) + closing, tools=TOOLS,
                                                  tool_choice="required"))
    assert stats.stop_reason == "length" and stats.completion_tokens == len(body) + closing
    assert [e for e in events if isinstance(e, ToolCallDelta)][0].error is None
    assert ("pick", "free") not in runtime.log  # nothing is picked past the limit


def test_a_full_context_stops_with_one_slot_to_spare() -> None:
    runtime = Scripted({"free": tokens("abcdefghij")}, context_size=10)
    _, stats = run(runtime, GenerationParams(max_tokens=80))
    assert stats.stop_reason == "length"
    assert stats.context_used == 9 and stats.completion_tokens == 3


def test_cancelling_stops_after_the_token_being_picked() -> None:
    cancel = CancelToken()
    runtime = Scripted({"free": tokens("abcdef")}, cancel=cancel, cancel_at=3)
    events, stats = run(runtime, GenerationParams(max_tokens=80), cancel)
    assert text_of(events) == "ab" and stats.stop_reason == "cancelled" and stats.completion_tokens == 2
    assert runtime.closed


def test_a_prefill_cancelled_part_way_picks_nothing() -> None:
    runtime = Scripted({"free": tokens("abc")}, cancel_prefill=True)
    events, stats = run(runtime, GenerationParams(max_tokens=80))
    assert events == [] and stats.stop_reason == "cancelled" and stats.completion_tokens == 0
    assert [entry[0] for entry in runtime.log] == ["prefill"]
