"""The DAG scheduler and durable run state, against a real SQLite store and fake executors."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tui.harness import store_fixture  # noqa: F401  (the `store` fixture)

from smoltui.backends.base import Backend
from smoltui.backends.scripted import ScriptedBackend
from smoltui.errors import ModelError
from smoltui.orchestrator.approval import ApprovalGate, Policy
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.events import EventBus
from smoltui.orchestrator.model import Model
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.scheduler import (
    LLMTaskExecutor,
    RenderedTask,
    RunStateChanged,
    TaskFailed,
    TaskInfo,
    TaskStateChanged,
    ToolTaskExecutor,
    WorkflowRunner,
)
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workflow_spec import Task, Workflow
from smoltui.tools.base import tool
from smoltui.tools.registry import ToolRegistry


@pytest.fixture
def runs(store: Store) -> RunStore:
    return RunStore(store)


def model(backend: Backend | None, error: ModelError | None = None) -> Model:
    """The core's shared model over ``backend`` (None: no model, and ``error`` says why)."""
    return Model(backend, EventBus(), label="scripted", error=error)


def committed(store: Store, sql: str, params: tuple[Any, ...]) -> Any:
    """One value as another connection (another process) reads it: only what is committed."""
    with sqlite3.connect(store.path) as conn:
        row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def workflow(*tasks: dict[str, Any], variables: dict[str, Any] | None = None, limit: int = 4) -> Workflow:
    return Workflow.model_validate({"id": "wf", "name": "test", "variables": variables or {},
                                    "tasks": list(tasks), "max_concurrent_tasks": limit})


def t(task_id: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "type": "tool_call", "tool": "fake", "depends_on": list(deps), **extra}


class Fake:
    """A tool_call executor driven by ``behaviour[task_id]`` (a callable or a value to return).

    ``together``: the first attempts hold until that many run at once (then everyone goes on), so a
    concurrency limit is measured by what overlaps, not by how long each attempt sleeps.
    """

    def __init__(self, behaviour: dict[str, Any] | None = None, together: int = 1) -> None:
        self.behaviour = behaviour or {}
        self.together = together
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.active = 0
        self.peak = 0
        self.order: list[str] = []
        self._overlap = asyncio.Condition()

    async def execute(self, task: Task, rendered: RenderedTask, info: TaskInfo) -> dict[str, Any]:
        self.calls.append((task.id, rendered.inputs))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            async with self._overlap:
                self._overlap.notify_all()
                await asyncio.wait_for(self._overlap.wait_for(lambda: self.peak >= self.together), 10)
            action = self.behaviour.get(task.id)
            if callable(action):
                result = action(info.attempt)
                if asyncio.iscoroutine(result):
                    result = await result
            else:
                result = action if action is not None else f"{task.id}-done"
        finally:
            self.active -= 1
        self.order.append(task.id)
        return {name: result for name in task.outputs} if task.outputs else {}

    def count(self, task_id: str) -> int:
        return sum(1 for c in self.calls if c[0] == task_id)


async def run(spec: Workflow, runs: RunStore, fake: Fake, **kw: Any):
    runner = WorkflowRunner(spec, runs, {"tool_call": fake}, kw.pop("bus", None), kw.pop("concurrency", None))
    return await runner.run(**kw)


async def test_independent_tasks_overlap_and_limit_holds(runs: RunStore) -> None:
    spec = workflow(*(t(f"t{i}") for i in range(6)), limit=3)
    fake = Fake(together=3)
    result = await run(spec, runs, fake)
    assert result.state == "succeeded"
    assert fake.peak == 3
    fake2 = Fake(together=6)
    await run(spec, runs, fake2, concurrency=6)
    assert fake2.peak == 6


async def test_dependency_order_and_outputs_flow_through_templates(runs: RunStore) -> None:
    spec = workflow(
        t("load", outputs=["rows"], inputs={"path": "${src}"}),
        t("count", "load", outputs=["n"], inputs={"rows": "${rows}", "label": "n=${rows | length}"}),
        t("report", "count", inputs={"text": "${n}"}),
        variables={"src": "data.csv"},
    )
    fake = Fake({"load": [1, 2, 3], "count": 3})
    result = await run(spec, runs, fake)
    assert result.ok
    assert fake.order == ["load", "count", "report"]
    assert fake.calls[0][1] == {"path": "data.csv"}
    assert fake.calls[1][1] == {"rows": [1, 2, 3], "label": "n=3"}
    assert fake.calls[2][1] == {"text": 3}
    assert await runs.task_outputs(result.run_id, "load") == {"rows": [1, 2, 3]}


async def test_retries_with_backoff_record_attempts(runs: RunStore) -> None:
    def flaky(attempt: int) -> str:
        if attempt < 3:
            raise RuntimeError(f"boom {attempt}")
        return "ok"

    spec = workflow(t("flaky", outputs=["x"], retries={"count": 3, "delay": 0.01, "backoff": 2}))
    result = await run(spec, runs, Fake({"flaky": flaky}))
    assert result.ok
    record = (await runs.task_records(result.run_id))["flaky"]
    assert (record.state, record.attempt) == ("succeeded", 3)
    logs = [e.message for e in await runs.events(result.run_id)]
    assert any("attempt 1/4 failed: RuntimeError: boom 1; retrying in 0.01s" in m for m in logs)
    assert any("retrying in 0.02s" in m for m in logs)


async def test_timeout_cancels_hanging_task_while_other_branch_succeeds(runs: RunStore) -> None:
    cancelled = asyncio.Event()

    async def hang(attempt: int) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    spec = workflow(t("slow", timeout=0.1), t("after", "slow"), t("fast"))
    result = await run(spec, runs, Fake({"slow": hang}))
    assert cancelled.is_set()
    assert result.tasks == {"slow": "failed", "after": "upstream_failed", "fast": "succeeded"}
    assert "timed out after 0.1s" in (await runs.task_records(result.run_id))["slow"].error


async def test_failure_marks_dependents_upstream_failed(runs: RunStore) -> None:
    def bad(attempt: int) -> None:
        raise TaskFailed("disk on fire")

    spec = workflow(t("a"), t("b", "a"), t("c", "b"), t("x"), t("y", "x"))
    fake = Fake({"a": bad})
    result = await run(spec, runs, fake)
    assert result.state == "failed"
    assert result.tasks == {"a": "failed", "b": "upstream_failed", "c": "upstream_failed",
                            "x": "succeeded", "y": "succeeded"}
    assert fake.count("b") == 0
    assert (await runs.get_run(result.run_id)).state == "failed"
    assert result.errors["a"] == "disk on fire"


async def test_when_false_skips_task_and_dependents(runs: RunStore) -> None:
    spec = workflow(t("a", when="${enabled}"), t("b", "a"), t("c", when="n > 2"),
                    variables={"enabled": False, "n": 3})
    fake = Fake()
    result = await run(spec, runs, fake)
    assert result.state == "succeeded"
    assert result.tasks == {"a": "skipped", "b": "skipped", "c": "succeeded"}
    assert [c[0] for c in fake.calls] == ["c"]


@pytest.mark.parametrize(("big", "ran", "skipped"), [(True, "yes", "no"), (False, "no", "yes")])
async def test_conditional_picks_a_branch(runs: RunStore, big: bool, ran: str, skipped: str) -> None:
    spec = workflow(
        {"id": "check", "type": "conditional", "condition": "${size > 10}", "then": ["yes"], "else": ["no"]},
        t("yes", "check"), t("no", "check"), t("after_" + skipped, skipped),
        variables={"size": 50 if big else 1},
    )
    fake = Fake()
    result = await run(spec, runs, fake)
    assert result.ok
    assert result.tasks[ran] == "succeeded"
    assert result.tasks[skipped] == result.tasks["after_" + skipped] == "skipped"
    assert [c[0] for c in fake.calls] == [ran]


async def test_template_error_names_task_field_and_expression(runs: RunStore) -> None:
    spec = workflow(t("a", inputs={"p": "${missing_var + 1}"}))
    result = await run(spec, runs, Fake())
    error = result.errors["a"]
    assert "`a`" in error and "inputs.p" in error and "missing_var" in error


async def test_resume_reruns_only_unfinished_tasks_and_restores_artifacts(runs: RunStore) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": [1, 2, 3]})
    crashed = []

    def b(attempt: int) -> str:
        if not crashed:
            crashed.append(1)
            raise asyncio.CancelledError  # the process "dies" mid-run
        return "b-ok"

    spec = workflow(t("a", outputs=["blob", "frame"]), t("b", "a", outputs=["res"],
                                                         inputs={"n": "${frame.x.sum()}", "raw": "${blob}"}))

    def a_outputs(attempt: int) -> dict[str, Any]:
        return {"blob": b"\x00\x01binary", "frame": frame}

    class Split(Fake):
        async def execute(self, task: Task, rendered: RenderedTask, info: TaskInfo) -> dict[str, Any]:
            if task.id == "a":
                self.calls.append((task.id, rendered.inputs))
                return a_outputs(info.attempt)
            return await super().execute(task, rendered, info)

    fake = Split({"b": b})
    with pytest.raises(asyncio.CancelledError):
        await run(spec, runs, fake, run_id="r1")
    assert await runs.task_states("r1") == {"a": "succeeded", "b": "cancelled"}
    assert (await runs.get_run("r1")).state == "cancelled"
    artifacts = list(runs.artifacts_dir("r1").iterdir())
    assert {p.suffix for p in artifacts} == {".bin", ".parquet"}

    # A new runner (as after a restart) with the same run id.
    result = await run(spec, runs, fake, run_id="r1")
    assert result.ok
    assert fake.count("a") == 1
    assert fake.count("b") == 2
    assert fake.calls[-1][1] == {"n": 6, "raw": b"\x00\x01binary"}
    restored = await runs.task_outputs("r1", "a")
    assert restored["blob"] == b"\x00\x01binary"
    assert restored["frame"].equals(frame)
    assert [r.id for r in await runs.list_runs()] == ["r1"]


async def test_cancelling_the_run_marks_running_and_unstarted_tasks_cancelled(runs: RunStore) -> None:
    started = asyncio.Event()

    async def hang(attempt: int) -> None:
        started.set()
        await asyncio.sleep(30)

    spec = workflow(t("a"), t("b", "a"))
    job = asyncio.create_task(run(spec, runs, Fake({"a": hang}), run_id="r2"))
    await started.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert (await runs.get_run("r2")).state == "cancelled"
    # Not "pending": nothing will run b unless the run is resumed.
    assert await runs.task_states("r2") == {"a": "cancelled", "b": "cancelled"}
    assert (await runs.task_records("r2"))["b"].error == "not started: the run was cancelled"
    result = await run(spec, runs, Fake(), run_id="r2")  # a resume runs both
    assert result.ok and result.tasks == {"a": "succeeded", "b": "succeeded"}


async def test_events_are_published_after_the_row_is_committed(store: Store, runs: RunStore) -> None:
    bus = EventBus()
    seen: list[tuple[str, str, str]] = []

    def check(event: object) -> None:
        # The bus swallows a subscriber's exceptions, so a mismatch is recorded, not asserted, here.
        if isinstance(event, TaskStateChanged):
            state = committed(store, "SELECT state FROM task_runs WHERE run_id = ? AND task_id = ?",
                              (event.run_id, event.task_id))
            seen.append(("task", event.task_id, event.state if state == event.state else f"uncommitted {state}"))
        elif isinstance(event, RunStateChanged):
            state = committed(store, "SELECT state FROM runs WHERE id = ?", (event.run_id,))
            seen.append(("run", event.run_id, event.state if state == event.state else f"uncommitted {state}"))

    bus.subscribe(check)  # type: ignore[arg-type]
    spec = workflow(t("a"), t("b", "a", when="false"))
    await run(spec, runs, Fake(), bus=bus, run_id="r3")
    assert seen == [("run", "r3", "running"), ("task", "a", "running"), ("task", "a", "succeeded"),
                    ("task", "b", "skipped"), ("run", "r3", "succeeded")]


async def test_tool_task_executor_calls_through_the_gate(tmp_path: Path, store: Store, runs: RunStore) -> None:
    @tool(risk="read")
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    gate = ApprovalGate(ToolRegistry([shout]), Policy(defaults={"read": "auto"}), audit=AuditLog(store))
    spec = Workflow.model_validate({"id": "wf", "tasks": [
        {"id": "s", "type": "tool_call", "tool": "shout", "inputs": {"text": "hi ${who}"}, "outputs": ["loud"]},
        {"id": "bad", "type": "tool_call", "tool": "shout", "inputs": {"nope": 1}},
    ], "variables": {"who": "there"}})
    runner = WorkflowRunner(spec, runs, {"tool_call": ToolTaskExecutor(gate, tmp_path)})
    result = await runner.run()
    assert result.outputs["s"] == {"loud": "HI THERE"}
    assert result.tasks["bad"] == "failed"
    assert "tool `shout` failed" in result.errors["bad"]
    assert [c.tool for c in await store.tool_calls(run_id=result.run_id)] == ["shout", "shout"]


async def test_llm_task_executor_streams_and_parses_schema(runs: RunStore) -> None:
    backend = ScriptedBackend(['{"score": 7}', "plain words", '{"score": "high"}'], delay_s=0)
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    spec = Workflow.model_validate({"id": "wf", "max_concurrent_tasks": 1, "tasks": [
        {"id": "rate", "type": "llm_task", "prompt": "Rate ${thing}", "schema": schema, "outputs": ["r"],
         "system": "be terse", "think": False},
        {"id": "say", "type": "llm_task", "prompt": "Score was ${r.score}", "depends_on": ["rate"],
         "outputs": ["words"]},
        {"id": "bad", "type": "llm_task", "prompt": "again", "schema": schema, "depends_on": ["say"]},
    ], "variables": {"thing": "tea"}})
    tokens: list = []

    class Collect:
        def publish(self, event) -> None:  # noqa: ANN001
            if event.kind == "task_token":
                tokens.append((event.task_id, event.text))

    runner = WorkflowRunner(spec, runs, {"llm_task": LLMTaskExecutor(model(backend), bus=Collect())})
    result = await runner.run()
    assert result.outputs["rate"] == {"r": {"score": 7}}
    assert result.outputs["say"] == {"words": "plain words"}
    # The reply streams to viewers as it is generated, token by token.
    assert "".join(text for task, text in tokens if task == "say") == "plain words"
    assert backend.prompts[0][0].content == "be terse"
    assert backend.prompts[1][-1].content == "Score was 7"
    assert result.tasks["bad"] == "failed"
    assert "does not match its schema at score" in result.errors["bad"]


class FailingLoad(ScriptedBackend):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def load(self, progress=None) -> None:  # noqa: ANN001
        raise self.error


@pytest.mark.parametrize(("shared", "expected"), [
    (lambda: model(FailingLoad(ModelError("/models/x.gguf is not a GGUF model file"))),
     "/models/x.gguf is not a GGUF model file"),
    (lambda: model(FailingLoad(RuntimeError("out of memory"))),
     "the model failed to load: RuntimeError: out of memory"),
    (lambda: model(None, ModelError("no model file at /models/missing.gguf")),
     "no model is available for LLM tasks (no model file at /models/missing.gguf)"),
    (lambda: None, "no model is available for LLM tasks"),
], ids=["model-error", "runtime-crash", "no-backend", "no-model"])
async def test_llm_task_without_a_loadable_model_fails_with_the_reason(
        tmp_path: Path, shared: Callable[[], Model | None], expected: str) -> None:
    spec = Workflow.model_validate({"id": "wf", "tasks": [
        {"id": "ask", "type": "llm_task", "prompt": "hello", "outputs": ["reply"]}]})
    executor = LLMTaskExecutor(shared())
    info = TaskInfo("r1", "ask", 1, tmp_path / "artifacts")
    for _ in range(2):  # the second task to try gets the same reason, not a vaguer one
        with pytest.raises(TaskFailed) as failure:
            await executor.execute(spec.tasks[0], RenderedTask({}, "hello"), info)
        assert str(failure.value) == expected


async def test_llm_timeout_cancels_the_generation(runs: RunStore) -> None:
    backend = ScriptedBackend(["word " * 200], delay_s=0.01)
    spec = Workflow.model_validate({"id": "wf", "tasks": [
        {"id": "long", "type": "llm_task", "prompt": "go", "timeout": 0.1, "outputs": ["o"]}]})
    result = await WorkflowRunner(spec, runs, {"llm_task": LLMTaskExecutor(model(backend))}).run()
    assert result.tasks == {"long": "failed"}
    assert "timed out after 0.1s" in result.errors["long"]


async def test_state_changes_land_in_the_run_event_log_whoever_drives_the_run(runs: RunStore) -> None:
    spec = workflow(t("a"), t("b", "a", when="${false}"))
    result = await run(spec, runs, Fake())
    entries = [(e.kind, e.task_id, e.message) for e in await runs.events(result.run_id)]
    assert entries[0] == ("run_state", None, "running") and entries[-1] == ("run_state", None, "succeeded")
    assert ("task_state", "a", "running") in entries and ("task_state", "a", "succeeded") in entries
    assert ("task_state", "b", "skipped") in entries
    assert entries.index(("task_state", "a", "succeeded")) < entries.index(("task_state", "b", "skipped"))


class CountingBackend(ScriptedBackend):
    """Records how many generations overlap and the order prompts arrive in."""

    def __init__(self) -> None:
        super().__init__(["one two three"], delay_s=0.01)
        self.active = 0
        self.peak = 0
        self.order: list[str] = []

    async def stream(self, messages, params, cancel):  # noqa: ANN001, ANN201
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.order.append(messages[-1].content)
        try:
            async for event in super().stream(messages, params, cancel):
                yield event
        finally:
            self.active -= 1


async def test_llm_tasks_share_one_model_one_at_a_time_in_arrival_order(runs: RunStore) -> None:
    backend = CountingBackend()
    tasks = [{"id": f"q{i}", "type": "llm_task", "prompt": f"question {i}", "outputs": [f"a{i}"]} for i in range(4)]
    tasks.append({"id": "tool", "type": "tool_call", "tool": "noop", "inputs": {}})
    spec = Workflow.model_validate({"id": "wf", "max_concurrent_tasks": 5, "tasks": tasks})
    fake = Fake()
    arrivals: list[str] = []

    class Recording(LLMTaskExecutor):
        async def execute(self, task, rendered, info):  # noqa: ANN001, ANN201
            arrivals.append(rendered.prompt)
            return await super().execute(task, rendered, info)

    runner = WorkflowRunner(spec, runs, {"llm_task": Recording(model(backend)), "tool_call": fake})
    result = await runner.run()
    assert result.ok
    assert backend.peak == 1  # the model never ran two generations at once
    assert len(arrivals) == 4 and backend.order == arrivals  # FIFO: first come, first served
    assert fake.order == ["tool"]  # other task types did not wait for the model
