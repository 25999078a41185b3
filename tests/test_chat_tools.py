"""The chat's agent loop: the model calls tools, the gate runs them, results go back, until it answers.

Real pieces: the approval gate and audit log on a SQLite store, tools made with ``@tool``; the model
is the scripted backend, whose replies contain SmolLM3-style ``<tool_call>`` markup.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from smoltui.backends.base import GenerationParams
from smoltui.backends.call_markup import split_markup
from smoltui.backends.scripted import ScriptedBackend
from smoltui.orchestrator.approval import ApprovalGate, ApprovalNeeded, Decision, Policy
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.chat import ChatService, ChatSettings
from smoltui.orchestrator.events import (
    EventBus,
    ReplyFinished,
    ToolCallDone,
    ToolCallRequested,
    ToolStepLimit,
)
from smoltui.orchestrator.model import Model
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.transcript import Called, load_transcript
from smoltui.tools.base import tool
from smoltui.tools.registry import ToolRegistry


@tool(risk="read")
def get_weather(city: str, unit: str = "celsius") -> dict:
    """Current weather for a city.

    Args:
        city: The city.
        unit: celsius or fahrenheit.
    """
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit}


@tool(risk="write")
def save_note(text: str) -> str:
    """Save a note.

    Args:
        text: What to write.
    """
    return f"saved {len(text)} characters"


def call(name: str, **arguments: object) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


class Harness:
    """A chat with tools as the core builds it: one bus for the chat and the gate, one model."""

    def __init__(self, tmp_path: Path, store: Store, replies: list[str], policy: Policy | None, steps: int) -> None:
        self.store = store
        self.bus = EventBus()
        self.gate = ApprovalGate(ToolRegistry([get_weather, save_note]), policy or Policy(),
                                 audit=AuditLog(self.store), bus=self.bus, timeout_s=None)
        self.backend = ScriptedBackend(replies, delay_s=0)
        settings = ChatSettings(params=GenerationParams(max_tokens=200), max_tool_steps=steps)
        model = Model(self.backend, self.bus, label="scripted")
        self.service = ChatService(model, self.store, settings, bus=self.bus, gate=self.gate, workspace=tmp_path)
        self.events: list = []
        self.bus.subscribe(self.events.append)

    @classmethod
    async def open(cls, tmp_path: Path, replies: list[str], policy: Policy | None = None, steps: int = 6) -> Harness:
        h = cls(tmp_path, await Store.open(tmp_path / "smoltui.db"), replies, policy, steps)
        h.session = await h.store.create_session("t", "scripted")
        return h

    async def start(self, tools: list[str]) -> None:
        await self.service.load_model()
        await self.service.set_session_tools(self.session.id, tools)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


@pytest_asyncio.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    made: list[Harness] = []

    async def build(*args, **kwargs) -> Harness:
        made.append(await Harness.open(tmp_path, *args, **kwargs))
        return made[-1]

    yield build
    for harness in made:
        await harness.store.close()


async def test_call_result_answer(make) -> None:
    h = await make([f"Let me look. {call('get_weather', city='Paris')}", "It is 21 °C in Paris."])
    await h.start(["get_weather"])
    finished = await h.service.send(h.session.id, "Weather in Paris?")
    assert finished is not None and finished.content == "It is 21 °C in Paris." and not finished.tool_calls
    rows = await h.store.messages(h.session.id)
    assert [m.role for m in rows] == ["user", "assistant", "tool", "assistant"]
    text, calls = split_markup(rows[1].content)
    assert text == "Let me look." and len(calls) == 1 and '"get_weather"' in calls[0]
    assert json.loads(rows[2].content) == {"name": "get_weather",
                                           "result": {"city": "Paris", "temperature": 21, "unit": "celsius"}}
    (requested,) = h.of(ToolCallRequested)
    (done,) = h.of(ToolCallDone)
    assert requested.name == "get_weather" and done.ok and done.message_id == rows[2].id
    # The model saw the tools on both steps, and the result on the second.
    second = h.backend.prompts[1]
    assert second[-1].role == "tool" and "temperature" in second[-1].content
    assert [len(e.tool_calls) for e in h.of(ReplyFinished)] == [1, 0]
    assert rows[1].stats["think"] is False
    # The call is a row beside the reply that made it, settled with its result.
    (made,) = await h.store.message_tool_calls(h.session.id)
    assert (made.message_id, made.name, json.loads(made.arguments)) == (rows[1].id, "get_weather", {"city": "Paris"})
    assert (made.ok, made.decision, made.decided_by, made.result_message_id) == (True, "auto", "policy", rows[2].id)


async def test_malformed_call_gets_an_error_result_the_model_can_repair(make) -> None:
    h = await make(['<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"</tool_call>',
              call("get_weather", city="Paris"), "Sunny."])
    await h.start(["get_weather"])
    finished = await h.service.send(h.session.id, "Weather?")
    assert finished.content == "Sunny."
    results = [json.loads(m.content) for m in await h.store.messages(h.session.id) if m.role == "tool"]
    assert results[0]["kind"] == "invalid_call" and "not valid JSON" in results[0]["error"]
    assert "result" in results[1]
    first, second = h.of(ToolCallDone)
    assert not first.ok and "not valid JSON" in first.summary and second.ok


async def test_unknown_tool_and_bad_arguments_come_back_as_errors(make) -> None:
    h = await make([call("get_wether", city="Paris"), call("get_weather", town="Paris"), "Done."])
    await h.start(["get_weather"])
    await h.service.send(h.session.id, "Weather?")
    results = [json.loads(m.content) for m in await h.store.messages(h.session.id) if m.role == "tool"]
    assert results[0]["kind"] == "unknown_tool"
    assert results[1]["kind"] == "invalid_arguments" and "city" in results[1]["error"]


async def test_denied_call_is_reported_and_nothing_runs(make) -> None:
    h = await make([call("save_note", text="hello"), "I could not save it."])
    await h.start(["save_note"])
    answered: list[str] = []

    def answer(event) -> None:
        if isinstance(event, ApprovalNeeded):
            answered.append(event.call.tool)
            assert event.call.session_id == h.session.id
            h.gate.answer(event.call.id, Decision("deny"))

    h.bus.subscribe(answer)
    finished = await h.service.send(h.session.id, "Save hello")
    assert answered == ["save_note"] and finished.content == "I could not save it."
    (done,) = h.of(ToolCallDone)
    assert not done.ok and "denied" in done.summary


async def test_an_edited_call_is_stored_with_the_arguments_that_ran(make) -> None:
    h = await make([call("save_note", text="draft"), "Saved."])
    await h.start(["save_note"])

    def answer(event) -> None:
        if isinstance(event, ApprovalNeeded):
            h.gate.answer(event.call.id, Decision("edit", {"text": "final text"}))

    h.bus.subscribe(answer)
    await h.service.send(h.session.id, "Save a note")
    user, reply, result, answer_row = await h.store.messages(h.session.id)
    assert json.loads(result.content) == {"name": "save_note", "result": "saved 10 characters"}
    assert '"draft"' in reply.content  # the reply keeps what the model wrote (its KV cache holds it)
    (done,) = h.of(ToolCallDone)
    assert done.ok and json.loads(done.arguments) == {"text": "final text"}
    (made,) = await h.store.message_tool_calls(h.session.id)
    assert json.loads(made.arguments) == {"text": "final text"}
    assert (made.decision, made.decided_by, made.result_message_id) == ("edit", "user", result.id)
    # What a person reads back is the call as it ran.
    [shown] = [e for e in await load_transcript(h.store, h.session.id) if isinstance(e, Called)]
    assert json.loads(shown.arguments) == {"text": "final text"} and shown.decision == "edit"


async def test_step_limit_stops_a_model_that_keeps_calling(make) -> None:
    h = await make([call("get_weather", city="Paris")], steps=2)
    await h.start(["get_weather"])
    await h.service.send(h.session.id, "Loop")
    assert len(h.of(ToolCallDone)) == 2
    (limit,) = h.of(ToolStepLimit)
    assert limit.steps == 2
    assert [m.role for m in await h.store.messages(h.session.id)].count("assistant") == 3


async def test_tools_are_off_until_switched_on(make) -> None:
    h = await make([call("get_weather", city="Paris")])
    await h.service.load_model()
    finished = await h.service.send(h.session.id, "Weather?")
    assert not h.of(ToolCallRequested) and finished.tool_calls == ()
    assert h.backend.prompts[0] and await h.store.session_tools(h.session.id) == []
    with pytest.raises(Exception, match="unknown tool"):
        await h.service.set_session_tools(h.session.id, ["nope"])


async def test_cancel_while_a_call_waits_for_approval(make) -> None:
    h = await make([call("save_note", text="x"), "never"])
    await h.start(["save_note"])
    waiting = asyncio.Event()
    h.bus.subscribe(lambda e: waiting.set() if isinstance(e, ApprovalNeeded) else None)
    job = asyncio.create_task(h.service.send(h.session.id, "Save"))
    await asyncio.wait_for(waiting.wait(), 5)
    assert h.service.cancel()
    await asyncio.wait_for(job, 5)
    (done,) = h.of(ToolCallDone)
    assert not done.ok and done.summary == "cancelled"
    assert h.gate.waiting() == []
    assert [m.role for m in await h.store.messages(h.session.id)] == ["user", "assistant"]


def test_call_schema_keeps_a_parameter_named_title() -> None:
    from smoltui.backends.tool_calls import call_schema

    tool_schema = {"type": "function", "function": {"name": "create_event", "parameters": {
        "type": "object", "title": "Args", "properties": {"title": {"type": "string", "title": "Title"}},
        "required": ["title"]}}}
    arguments = call_schema([tool_schema])["properties"]["arguments"]
    assert arguments["properties"] == {"title": {"type": "string"}} and "title" not in {
        k for k in arguments if k != "properties"}


def test_a_stored_call_holding_a_closing_tag_in_a_string_is_split_whole() -> None:
    inside = '<tool_call>{"name": "write_file", "arguments": {"content": "a</tool_call>b"}}\n</tool_call>'
    broken = '<tool_call>{"name": "read_file", "arguments": {"path": </tool_call>'
    text, calls = split_markup(f"Saving. {inside} Then {broken} done.")
    assert calls == [inside, broken]  # the malformed one still ends at its first closing tag
    assert text == "Saving.  Then  done."
