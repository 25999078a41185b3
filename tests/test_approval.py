"""The approval gate: what runs, what asks, what is refused, and the audit row every call leaves."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from smoltui.errors import ConfigError
from smoltui.orchestrator.approval import (
    ApprovalGate,
    ApprovalNeeded,
    Decision,
    Policy,
    ToolCall,
    ToolCallFinished,
)
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.events import EventBus
from smoltui.orchestrator.store import Store
from smoltui.tools.base import Tool, ToolContext, tool
from smoltui.tools.registry import ToolRegistry
from smoltui.tools.seed_compat import filesystem

SESSION = 7


class Harness:
    """A gate over three tools whose side effects land in ``self.ran``, and a UI that answers.

    Open it with ``await Harness.open(...)``; ``await close()`` checks what the subscriber saw.
    """

    def __init__(self, tmp_path: Path, store: Store, policy: Policy | None, timeout_s: float | None,
                 extra_tools: tuple[Tool, ...]) -> None:
        self.ran: list[tuple[str, dict]] = []
        ran = self.ran

        @tool(risk="read")
        def look(path: str) -> str:
            """Read something."""
            ran.append(("look", {"path": path}))
            return f"contents of {path}"

        @tool(risk="write")
        def write_note(text: str, times: int = 1) -> str:
            """Write a note."""
            ran.append(("write_note", {"text": text, "times": times}))
            return "written"

        @tool(risk="execute")
        def shell(command: str) -> str:
            """Run a command."""
            ran.append(("shell", {"command": command}))
            return "done"

        self.store = store
        self.audit = AuditLog(self.store)
        self.bus = EventBus()
        self.events: list[object] = []
        self.answers: list[Decision] = []  # what the "user" says, in order
        self.asked: list[str] = []
        self._asked_more = asyncio.Event()
        self.unrecorded: list[str] = []
        self.bus.subscribe(self._on_event)
        self.gate = ApprovalGate(ToolRegistry([look, write_note, shell, *extra_tools]), policy or Policy(),
                                 audit=self.audit, bus=self.bus, timeout_s=timeout_s)
        self.ctx = ToolContext(workspace=tmp_path, artifacts_dir=tmp_path / "artifacts", session_id=SESSION)

    @classmethod
    async def open(cls, tmp_path: Path, policy: Policy | None = None, timeout_s: float | None = 5,
                   extra_tools: tuple[Tool, ...] = ()) -> Harness:
        return cls(tmp_path, await Store.open(tmp_path / "smoltui.db"), policy, timeout_s, extra_tools)

    def _on_event(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, ApprovalNeeded):
            self.asked.append(event.call.tool)
            self._asked_more.set()
            if self.answers:
                decision = self.answers.pop(0)
                call_id = event.call.id
                # Answer from the loop, as a Textual key handler would, after the gate starts waiting.
                asyncio.get_running_loop().call_soon(self.gate.answer, call_id, decision)
        elif isinstance(event, ToolCallFinished) and not self._on_disk(event.audit_id):
            # The row must already be written when the result is published. (The bus swallows a
            # subscriber's exceptions, so problems are collected and checked in close().)
            self.unrecorded.append(event.call.id)

    def _on_disk(self, audit_id: int | None) -> bool:
        # A connection of its own: the row must be committed, not just known to the gate.
        if audit_id is None:
            return False
        with sqlite3.connect(self.store.path) as conn:
            return conn.execute("SELECT 1 FROM tool_calls WHERE id = ?", (audit_id,)).fetchone() is not None

    async def until_asked(self, count: int) -> None:
        """Wait until the gate has asked about ``count`` calls in all."""
        while len(self.asked) < count:
            self._asked_more.clear()
            await asyncio.wait_for(self._asked_more.wait(), 5)

    async def call(self, name: str, **arguments: object):  # noqa: ANN201
        return await self.gate.run(ToolCall.new(name, arguments, session_id=SESSION), self.ctx)

    async def close(self) -> None:
        await self.store.close()
        assert self.unrecorded == [], "a result was published before its audit row was written"

    async def rows(self):  # noqa: ANN201
        return list(reversed(await self.audit.list()))


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await Harness.open(tmp_path)
    yield harness
    await harness.close()


async def test_read_tool_runs_without_asking(h: Harness) -> None:
    result = await h.call("look", path="a.txt")
    assert result.ok and result.content == "contents of a.txt"
    assert h.asked == [] and h.ran == [("look", {"path": "a.txt"})]
    [row] = await h.rows()
    assert (row.tool, row.decision, row.decided_by, row.ok) == ("look", "auto", "policy", True)
    assert row.arguments == {"path": "a.txt"} and row.session_id == SESSION
    assert row.result_summary == '"contents of a.txt"' and row.duration_s is not None
    assert [e.kind for e in h.events] == ["tool_call_finished"]


async def test_write_asks_and_approve_once_runs_it(h: Harness) -> None:
    h.answers.append(Decision("once"))
    result = await h.call("write_note", text="hi")
    assert result.ok and h.asked == ["write_note"]
    assert h.ran == [("write_note", {"text": "hi", "times": 1})]
    [row] = await h.rows()
    assert (row.decision, row.decided_by, row.ok) == ("once", "user", True)
    # Once is once: the next call asks again.
    h.answers.append(Decision("once"))
    await h.call("write_note", text="again")
    assert h.asked == ["write_note", "write_note"]
    assert h.gate.waiting() == []


async def test_user_deny_does_not_run_the_tool(h: Harness) -> None:
    h.answers.append(Decision("deny"))
    result = await h.call("shell", command="rm -rf /")
    assert not result.ok and result.error_kind == "denied" and "denied by the user" in result.error
    assert h.ran == []
    [row] = await h.rows()
    assert (row.decision, row.decided_by, row.ok) == ("deny", "user", False)
    assert row.arguments == {"command": "rm -rf /"}


async def test_policy_deny_does_not_run_or_ask(tmp_path: Path) -> None:
    h = await Harness.open(tmp_path, Policy(defaults={"execute": "deny"}))
    result = await h.call("shell", command="ls")
    assert result.error_kind == "denied"
    assert result.error == "shell was denied by policy (risk execute)"
    assert h.ran == [] and h.asked == []
    [row] = await h.rows()
    assert (row.decision, row.decided_by, row.ok) == ("deny", "policy", False)
    await h.close()


async def test_always_remembers_allow_for_the_session(h: Harness) -> None:
    h.answers.append(Decision("always"))
    assert (await h.call("write_note", text="one")).ok
    assert (await h.call("write_note", text="two")).ok
    assert h.asked == ["write_note"]
    assert [r[1]["text"] for r in h.ran] == ["one", "two"]
    assert [(r.decision, r.decided_by) for r in await h.rows()] == [("always", "user"), ("always", "session")]
    assert h.gate.remembered(SESSION, None) == {"write_note": "allow"}
    # Another session is not covered by this session's "always".
    h.answers.append(Decision("deny"))
    other = ToolCall.new("write_note", {"text": "three"}, session_id=SESSION + 1)
    assert not (await h.gate.run(other, h.ctx)).ok
    assert h.asked == ["write_note", "write_note"]


async def test_always_for_a_read_does_not_let_writes_of_the_same_tool_through(tmp_path: Path) -> None:
    # The seed's `filesystem` is one tool whose risk is its action's: "always" for a read covers reads.
    (tmp_path / "notes.txt").write_text("old notes", encoding="utf-8")
    h = await Harness.open(tmp_path, Policy(tools={"filesystem": "ask"}), extra_tools=(filesystem,))
    h.answers.append(Decision("always"))
    assert (await h.call("filesystem", action="read", path="notes.txt")).ok
    assert (await h.call("filesystem", action="read", path="notes.txt")).ok
    assert h.asked == ["filesystem"]
    assert h.gate.remembered(SESSION, None) == {"filesystem:read": "allow"}

    h.answers.append(Decision("deny"))
    write = await h.call("filesystem", action="write", path="notes.txt", content="overwritten")
    assert not write.ok and write.error_kind == "denied"
    assert h.asked == ["filesystem", "filesystem"]  # the write was asked about, not waved through
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "old notes"

    # Nor does an "always" for a read settle a write of the same chat that is already waiting.
    other_chat = SESSION + 1
    writing = ToolCall.new("filesystem", {"action": "write", "path": "new.txt", "content": "x"}, session_id=other_chat)
    reading = ToolCall.new("filesystem", {"action": "read", "path": "notes.txt"}, session_id=other_chat)
    write_job = asyncio.create_task(h.gate.run(writing, h.ctx))
    await h.until_asked(3)
    h.answers.append(Decision("always"))
    assert (await h.gate.run(reading, h.ctx)).ok
    assert h.gate.is_waiting(writing.id)
    h.gate.answer(writing.id, Decision("deny"))
    assert (await write_job).error_kind == "denied"
    assert not (tmp_path / "new.txt").exists()
    assert [(r.arguments["action"], r.decision, r.decided_by) for r in await h.rows()] == [
        ("read", "always", "user"), ("read", "always", "session"), ("write", "deny", "user"),
        ("read", "always", "user"), ("write", "deny", "user")]
    await h.close()


async def test_always_deny_remembers_deny(h: Harness) -> None:
    h.answers.append(Decision("always_deny"))
    first = await h.call("shell", command="ls")
    second = await h.call("shell", command="pwd")
    assert not first.ok and not second.ok and second.error_kind == "denied"
    assert h.asked == ["shell"] and h.ran == []
    assert [(r.decision, r.decided_by) for r in await h.rows()] == [("always_deny", "user"), ("deny", "session")]


async def test_edit_runs_with_the_edited_arguments(h: Harness) -> None:
    h.answers.append(Decision("edit", {"text": "safer", "times": 2}))
    result = await h.call("write_note", text="original")
    assert result.ok
    assert h.ran == [("write_note", {"text": "safer", "times": 2})]
    [row] = await h.rows()
    assert (row.decision, row.decided_by) == ("edit", "user")
    assert row.arguments == {"text": "safer", "times": 2}
    assert row.original_arguments == {"text": "original"}


async def test_edit_with_invalid_arguments_is_not_run(h: Harness) -> None:
    h.answers.append(Decision("edit", {"text": "x", "times": "many"}))
    result = await h.call("write_note", text="original")
    assert not result.ok and result.error_kind == "invalid_arguments" and "times" in result.error
    assert h.ran == []
    [row] = await h.rows()
    assert (row.decision, row.decided_by, row.ok) == ("edit", "user", False)
    assert row.result_summary.startswith("error (invalid_arguments)")


async def test_no_answer_times_out_as_a_denial(tmp_path: Path) -> None:
    h = await Harness.open(tmp_path, timeout_s=0.05)
    result = await h.call("shell", command="ls")
    assert not result.ok and result.error_kind == "denied" and "no answer" in result.error
    assert h.ran == [] and h.asked == ["shell"] and h.gate.waiting() == []
    [row] = await h.rows()
    assert (row.decision, row.decided_by, row.ok) == ("deny", "timeout", False)
    await h.close()


async def test_waiting_call_is_visible_and_answerable_by_call_id(h: Harness) -> None:
    call = ToolCall.new("shell", {"command": "ls"}, session_id=SESSION)
    task = asyncio.create_task(h.gate.run(call, h.ctx))
    await h.until_asked(1)
    [request] = h.gate.waiting(session_id=SESSION)
    assert request.call is call and (request.risk, request.origin) == ("execute", "builtin")
    assert request.description == "Run a command." and request.where == "in the chat"
    assert h.gate.is_waiting(call.id)
    assert h.gate.waiting(session_id=SESSION + 1) == [] and h.gate.waiting(run_id="r1") == []
    assert h.gate.answer(call.id, Decision("once"))
    assert (await task).ok
    assert not h.gate.answer(call.id, Decision("once"))  # already settled
    assert not h.gate.is_waiting(call.id) and h.gate.waiting() == []


async def test_always_settles_other_waiting_calls_to_the_same_tool(h: Harness) -> None:
    calls = [ToolCall.new("write_note", {"text": str(i)}, session_id=SESSION) for i in range(2)]
    tasks = [asyncio.create_task(h.gate.run(c, h.ctx)) for c in calls]
    await h.until_asked(2)
    assert [r.call.id for r in h.gate.waiting()] == [c.id for c in calls]  # longest-waiting first
    h.gate.answer(calls[0].id, Decision("always"))
    results = await asyncio.gather(*tasks)
    assert all(r.ok for r in results)
    assert sorted((r.decision, r.decided_by) for r in await h.rows()) == [("always", "user"), ("once", "session")]


async def test_unknown_tool_and_bad_arguments_are_recorded_without_asking(h: Harness) -> None:
    unknown = await h.call("launch_missiles")
    bad = await h.call("shell", cmd="ls")
    assert unknown.error_kind == "unknown_tool" and bad.error_kind == "invalid_arguments"
    assert h.asked == [] and h.ran == []
    assert [(r.tool, r.decision, r.decided_by) for r in await h.rows()] == [
        ("launch_missiles", "none", "registry"), ("shell", "none", "registry")]


async def test_tool_override_beats_risk_default(tmp_path: Path) -> None:
    policy = Policy(tools={"shell": "auto", "look": "deny"})
    h = await Harness.open(tmp_path, policy)
    assert (await h.call("shell", command="ls")).ok
    assert (await h.call("look", path="x")).error_kind == "denied"
    assert h.asked == [] and h.ran == [("shell", {"command": "ls"})]
    await h.close()


async def test_every_path_leaves_exactly_one_row(tmp_path: Path) -> None:
    h = await Harness.open(tmp_path, Policy(tools={"look": "auto"}), timeout_s=0.05)
    h.answers.extend([Decision("once"), Decision("deny"), Decision("edit", {"text": "e"}),
                      Decision("edit", {"nope": 1})])
    await h.call("look", path="p")                 # auto
    await h.call("write_note", text="a")           # once
    await h.call("shell", command="b")             # deny
    await h.call("write_note", text="c")           # edit
    await h.call("write_note", text="d")           # edit, invalid
    await h.call("shell", command="t")             # timeout
    await h.call("nope")                           # unknown tool
    await h.call("look")                           # invalid arguments
    finished = [e for e in h.events if isinstance(e, ToolCallFinished)]
    rows = await h.rows()
    assert len(rows) == len(finished) == 8
    assert sorted(e.audit_id for e in finished) == [r.id for r in rows]
    assert [(r.decision, r.decided_by) for r in rows] == [
        ("auto", "policy"), ("once", "user"), ("deny", "user"), ("edit", "user"), ("edit", "user"),
        ("deny", "timeout"), ("none", "registry"), ("none", "registry")]
    assert all(r.ok is not None for r in rows)  # every row has its outcome
    await h.close()


async def test_cancelled_wait_is_recorded_and_nothing_runs(h: Harness) -> None:
    call = ToolCall.new("shell", {"command": "ls"}, session_id=SESSION)
    task = asyncio.create_task(h.gate.run(call, h.ctx))
    await h.until_asked(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.ran == [] and h.gate.waiting() == []
    [row] = await h.rows()
    assert (row.decision, row.decided_by) == ("deny", "cancelled")
    # Announced like any other end (a waiting card and the waiting count go with it).
    [finished] = [e for e in h.events if isinstance(e, ToolCallFinished)]
    assert finished.call.id == call.id and finished.decided_by == "cancelled"
    assert finished.audit_id == row.id and not finished.result.ok


def test_decision_checks_its_shape() -> None:
    with pytest.raises(ValueError):
        Decision("edit")
    with pytest.raises(ValueError):
        Decision("maybe")  # type: ignore[arg-type]


# -- policy ----------------------------------------------------------------------------------------


def _tools():  # noqa: ANN202
    @tool(risk="read")
    def look() -> None: ...

    @tool(risk="write")
    def write_note() -> None: ...

    @tool(risk="execute")
    def shell() -> None: ...

    @tool(risk="network")
    def fetch() -> None: ...

    return {t.name: t for t in (look, write_note, shell, fetch)}


def _modes(policy: Policy) -> dict[str, str]:
    return {name: policy.decide(t) for name, t in _tools().items()}


def test_default_policy_by_risk() -> None:
    assert _modes(Policy()) == {"look": "auto", "write_note": "ask", "shell": "ask", "fetch": "ask"}
    partial = Policy.model_validate({"defaults": {"network": "deny"}, "tools": {"look": "ask"}})
    assert _modes(partial) == {"look": "ask", "write_note": "ask", "shell": "ask", "fetch": "deny"}


def test_headless_flags() -> None:
    assert _modes(Policy.from_approve_flag("none")) == {
        "look": "auto", "write_note": "deny", "shell": "deny", "fetch": "deny"}
    assert _modes(Policy.from_approve_flag("all")) == dict.fromkeys(_tools(), "auto")
    assert _modes(Policy.from_approve_flag("read")) == {
        "look": "auto", "write_note": "deny", "shell": "deny", "fetch": "deny"}
    assert _modes(Policy.from_approve_flag("shell, fetch")) == {
        "look": "auto", "write_note": "deny", "shell": "auto", "fetch": "auto"}


def test_headless_flags_respect_the_configured_policy() -> None:
    base = Policy(defaults={"write": "auto"}, tools={"fetch": "deny", "look": "ask"})
    assert _modes(Policy.from_approve_flag("none", base)) == {
        "look": "deny", "write_note": "auto", "shell": "deny", "fetch": "deny"}
    # "all" still keeps an explicit per-tool deny from the config.
    assert _modes(Policy.from_approve_flag("all", base))["fetch"] == "deny"
    # The flag only settles what the config would ask about: naming a tool the config denies
    # does not let it through.
    assert _modes(Policy.from_approve_flag("fetch", base))["fetch"] == "deny"
    assert _modes(Policy.from_approve_flag("look", base))["look"] == "auto"
    for flag in ("none", "all", "read", "shell"):
        assert "ask" not in _modes(Policy.from_approve_flag(flag, base)).values()


@pytest.mark.parametrize("flag", ["", "shell,", "rm -rf", "a,,b", "x;y"])
def test_bad_approve_flags_are_config_errors(flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy.from_approve_flag(flag)
    assert "\n" not in str(info.value) and str(info.value).startswith("--approve: ")


def test_approve_flag_can_check_tool_names() -> None:
    with pytest.raises(ConfigError, match="no tool named 'shel'"):
        Policy.from_approve_flag("shel", known_tools=_tools())
    assert _modes(Policy.from_approve_flag("shell", known_tools=_tools()))["shell"] == "auto"
