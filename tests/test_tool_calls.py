"""Reading tool calls out of streamed model text (SmolLM3's and the Hermes/ChatML form)."""

from __future__ import annotations

import json

import pytest

from smoltui.backends.base import TextDelta, ToolCallDelta
from smoltui.backends.tool_calls import ToolCallSplitter, call_schema, format_call, parse_call


def split(*chunks: str) -> list[TextDelta | ToolCallDelta]:
    splitter = ToolCallSplitter()
    out: list[TextDelta | ToolCallDelta] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.flush()


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def calls_of(events) -> list[ToolCallDelta]:
    return [e for e in events if isinstance(e, ToolCallDelta)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_a_call_split_anywhere_comes_out_whole(size: int) -> None:
    reply = 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\nDone.'
    events = split(*(reply[i:i + size] for i in range(0, len(reply), size)))
    (call,) = calls_of(events)
    assert (call.name, json.loads(call.arguments), call.error) == ("get_weather", {"city": "Paris"}, None)
    assert call.raw == reply[reply.index("<tool_call>"):reply.index("</tool_call>") + len("</tool_call>")]
    assert text_of(events) == "Checking.\n\nDone."


def test_several_calls_in_one_reply_keep_their_order() -> None:
    reply = format_call("a", {"x": 1}) + format_call("b", {"y": [2]})
    assert [(c.name, json.loads(c.arguments)) for c in calls_of(split(reply))] == [("a", {"x": 1}), ("b", {"y": [2]})]


def test_a_dropped_closing_tag_is_repaired_at_the_end() -> None:
    (call,) = calls_of(split('<tool_call>{"name": "f", "arguments": {"q": "x"}}'))
    assert call.name == "f" and call.error is None and call.raw.endswith("</tool_call>")


def test_a_fenced_body_and_string_arguments_are_read() -> None:
    fenced = '<tool_call>```json\n{"name": "f", "arguments": "{\\"q\\": 1}"}\n```</tool_call>'
    (call,) = calls_of(split(fenced))
    assert call.name == "f" and json.loads(call.arguments) == {"q": 1} and call.error is None


@pytest.mark.parametrize(("body", "problem"), [
    ('{"name": "f", "arguments": {', "not valid JSON"),
    ('["f"]', "JSON object"),
    ('{"arguments": {}}', 'no "name"'),
    ('{"name": "f", "arguments": [1]}', "must be a JSON object"),
])
def test_broken_calls_say_what_is_wrong(body: str, problem: str) -> None:
    name, _, error = parse_call(body)
    assert error is not None and problem in error


def test_text_that_only_looks_like_a_tag_stays_text() -> None:
    events = split("a <tool", "_call is not", " a call < 3")
    assert not calls_of(events) and text_of(events) == "a <tool_call is not a call < 3"


def test_the_call_schema_names_only_offered_tools() -> None:
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("a", "b")]
    schema = call_schema(tools)
    assert [o["properties"]["name"] for o in schema["anyOf"]] == [{"const": "a"}, {"const": "b"}]


def test_a_token_that_runs_on_past_the_opening_tag_is_taken_back() -> None:
    splitter = ToolCallSplitter()
    assert splitter.feed("Let me look. <tool_call") == [TextDelta("Let me look. ")]
    assert splitter.feed("></") == []  # the tag's end and the start of a closing tag, in one token
    assert splitter.take_back_run_on("></") == ">"
    assert splitter.in_call and splitter.pending_call_text == ""
    (call,) = splitter.feed('{"name": "read_file", "arguments": {"path": "a"}}</tool_call>')
    assert call.name == "read_file" and call.error is None
    assert call.raw == '<tool_call>{"name": "read_file", "arguments": {"path": "a"}}</tool_call>'


def test_nothing_is_taken_back_without_a_run_on() -> None:
    splitter = ToolCallSplitter()
    splitter.feed("<tool_call>\n")
    assert splitter.take_back_run_on(">\n") is None  # whitespace: the grammar allows it
    assert splitter.pending_call_text == "\n"
    outside = ToolCallSplitter()
    assert outside.feed("no call here") == [TextDelta("no call here")]
    assert outside.take_back_run_on("here") is None and not outside.in_call


def test_a_call_cut_off_at_the_token_limit_says_so() -> None:
    splitter = ToolCallSplitter()
    splitter.feed('<tool_call>{"name": "calculate", "arguments": {"expression": "1+1+1+')
    (call,) = splitter.flush(cut_at_tokens=128)
    assert call.error.startswith("the reply reached its limit of 128 tokens inside this call")
    assert "not valid JSON" in call.error
    dropped_tag = ToolCallSplitter()  # a whole call whose closing tag was dropped still parses
    dropped_tag.feed('<tool_call>{"name": "calculate", "arguments": {"expression": "2"}}')
    (whole,) = dropped_tag.flush(cut_at_tokens=128)
    assert whole.error is None and whole.name == "calculate"


def test_a_closing_tag_inside_a_constrained_call_is_string_content() -> None:
    splitter = ToolCallSplitter()
    splitter.feed("<tool_call>")
    splitter.constrained = True  # a grammar holds the call: it, not the text, says where the call ends
    assert splitter.feed('{"name": "write_file", "arguments": {"content": "a</tool_call>b"}}') == []
    splitter.constrained = False
    (call,) = splitter.feed("\n</tool_call>")
    assert call.error is None and json.loads(call.arguments) == {"content": "a</tool_call>b"}
    assert splitter.feed(" done") == [TextDelta(" done")]
