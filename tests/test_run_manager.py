"""RunManager (launch, cancel, resume, retry, several runs at once) and the workflow catalog, headless.

Real pieces: a SQLite store in tmp_path, the real approval gate and built-in file tools, workflow
files on disk. Approvals are answered through the gate, as the TUI does.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from smoltui.backends.base import Backend
from smoltui.backends.scripted import ScriptedBackend
from smoltui.errors import ModelError, SmoltuiError
from smoltui.orchestrator.approval import ApprovalGate, ApprovalNeeded, Decision, Policy
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.events import EventBus, TaskStateChanged
from smoltui.orchestrator.model import Model
from smoltui.orchestrator.run_manager import RunFinished, RunManager, run_state_now
from smoltui.orchestrator.run_store import RunInUse, RunStore
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workflow_catalog import WorkflowCatalog, default_folders
from smoltui.orchestrator.workflow_spec import WorkflowError
from smoltui.tools.builtins import builtin_tools
from smoltui.tools.registry import ToolRegistry

READ_THEN_WRITE = """\
workflow:
  id: copy
  name: Copy a note
  variables:
    source: in.txt
    target: out.txt
  tasks:
    - id: read
      type: tool_call
      tool: read_file
      inputs: {path: "${source}"}
      outputs: [text]
    - id: write
      type: tool_call
      tool: write_file
      depends_on: [read]
      inputs: {path: "${target}", content: "copied: ${text['content']}"}
"""

SLOW = """\
workflow:
  id: slow
  tasks:
    - id: wait
      type: tool_call
      tool: python
      timeout: 60
      inputs: {code: "import time; time.sleep(30)"}
"""

LLM = """\
workflow:
  id: ask
  tasks:
    - id: answer
      type: llm_task
      prompt: "Say hello"
      outputs: [reply]
"""


class Harness:
    """A run manager over a real store, gate and tools, sharing one bus, as the core builds it.

    Open it with ``await Harness.open(...)``; :meth:`until` waits on the bus, never on a clock.
    """

    def __init__(self, folder: Path, store: Store, policy: Policy | None, backend: Backend | None) -> None:
        self.folder = folder
        self.store = store
        self.runs = RunStore(self.store)
        self.bus = EventBus()
        self.events: list = []
        self._published = asyncio.Event()
        self.bus.subscribe(self._on_event)
        tools = {t.name: t for t in builtin_tools()}
        self.tools = tools
        self.gate = ApprovalGate(ToolRegistry(tools.values()), policy or Policy(defaults={"write": "auto",
                                                                                             "execute": "auto"}),
                                 audit=AuditLog(self.store), bus=self.bus, timeout_s=None)
        model = Model(backend, self.bus, label="scripted") if backend is not None else None
        self.manager = RunManager(self.runs, gate=self.gate, bus=self.bus, model=model, tools=tools)

    @classmethod
    async def open(cls, folder: Path, policy: Policy | None = None, backend: Backend | None = None) -> Harness:
        return cls(folder, await Store.open(folder / "smoltui.db"), policy, backend)

    def _on_event(self, event: object) -> None:
        self.events.append(event)
        self._published.set()

    async def close(self) -> None:
        await self.manager.shutdown()  # no run outlives the test (nor writes to a closed store)
        await self.store.close()

    def write(self, name: str, text: str) -> Path:
        path = self.folder / name
        path.write_text(textwrap.dedent(text))
        return path

    async def until(self, found: Callable[[list], object], what: str, timeout: float = 20) -> Any:
        """Wait for the bus until ``found(events)`` is truthy; returns it."""
        async def watch() -> Any:
            while not (result := found(self.events)):
                self._published.clear()
                await self._published.wait()
            return result

        try:
            return await asyncio.wait_for(watch(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def finished(self, run_id: str, timeout: float = 20) -> RunFinished:
        """The run's next end (each end is taken once, so a resumed run can be awaited again)."""
        def first(events: list) -> RunFinished | None:
            return next((e for e in events if isinstance(e, RunFinished) and e.run_id == run_id), None)

        event = await self.until(first, f"run {run_id} to finish", timeout)
        self.events.remove(event)
        return event

    async def asked(self) -> ApprovalNeeded:
        """The first approval request of this harness's runs."""
        return await self.until(lambda events: next((e for e in events if isinstance(e, ApprovalNeeded)), None),
                                "an approval request")


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await Harness.open(tmp_path)
    yield harness
    await harness.close()


async def test_launch_runs_the_workflow_and_stores_rendered_inputs(h: Harness) -> None:
    (h.folder / "in.txt").write_text("hello")
    path = h.write("copy.yaml", READ_THEN_WRITE)
    run_id = await h.manager.launch(path, {"target": "copy.txt"})
    assert (await h.runs.get_run(run_id)).file == str(path.resolve())
    assert (await h.finished(run_id)).state == "succeeded"
    assert (h.folder / "copy.txt").read_text() == "copied: hello"
    records = await h.runs.task_records(run_id)
    assert records["write"].rendered["inputs"] == {"path": "copy.txt", "content": "copied: hello"}
    assert (await h.runs.get_run(run_id)).variables["target"] == "copy.txt"


async def test_launch_refuses_an_invalid_workflow_and_unknown_variables(h: Harness) -> None:
    broken = h.write("broken.yaml", READ_THEN_WRITE.replace("read_file", "raed_file"))
    with pytest.raises(WorkflowError, match="raed_file"):
        await h.manager.launch(broken)
    good = h.write("copy.yaml", READ_THEN_WRITE)
    with pytest.raises(WorkflowError, match="no variable"):
        await h.manager.launch(good, {"nope": 1})
    assert await h.runs.list_runs() == []


async def test_retry_a_failed_task_reruns_it_and_its_dependents_only(h: Harness) -> None:
    path = h.write("copy.yaml", READ_THEN_WRITE)
    run_id = await h.manager.launch(path)  # in.txt is missing: `read` fails, `write` never runs
    assert (await h.finished(run_id)).state == "failed"
    assert (await h.runs.task_states(run_id)) == {"read": "failed", "write": "upstream_failed"}
    with pytest.raises(Exception, match="did not fail"):
        await h.manager.retry_task(run_id, "nonexistent")
    (h.folder / "in.txt").write_text("second try")
    await h.manager.retry_task(run_id, "read")
    assert (await h.finished(run_id)).state == "succeeded"
    assert (await h.runs.task_states(run_id)) == {"read": "succeeded", "write": "succeeded"}
    assert (h.folder / "out.txt").read_text() == "copied: second try"


async def test_retry_leaves_other_failed_tasks_alone(h: Harness) -> None:
    two = """\
    workflow:
      id: two
      tasks:
        - {id: a, type: tool_call, tool: read_file, inputs: {path: a.txt}}
        - {id: b, type: tool_call, tool: read_file, inputs: {path: b.txt}}
    """
    run_id = await h.manager.launch(h.write("two.yaml", two))
    assert (await h.finished(run_id)).state == "failed"
    (h.folder / "a.txt").write_text("a")
    (h.folder / "b.txt").write_text("b")
    await h.manager.retry_task(run_id, "a")
    assert (await h.finished(run_id)).state == "failed"
    assert (await h.runs.task_states(run_id)) == {"a": "succeeded", "b": "failed"}
    assert (await h.runs.task_records(run_id))["b"].attempt == 1  # not run again


async def test_cancel_then_resume_and_several_runs_at_once(h: Harness) -> None:
    slow = h.write("slow.yaml", SLOW)
    first = await h.manager.launch(slow)
    second = await h.manager.launch(slow)
    assert first != second and h.manager.is_running(first) and h.manager.is_running(second)
    await h.until(lambda events: {(e.run_id, e.state) for e in events if isinstance(e, TaskStateChanged)}
                  >= {(first, "running"), (second, "running")}, "both runs' task to start")
    assert [(await h.runs.task_states(r))["wait"] for r in (first, second)] == ["running", "running"]
    assert h.manager.cancel(first)
    assert (await h.finished(first)).state == "cancelled"
    assert (await h.runs.get_run(first)).state == "cancelled"
    assert h.manager.is_running(second)
    h.manager.cancel(second)
    await h.finished(second)
    # Resume with a quick workflow body: the file changed since, the run's id and variables stay.
    slow.write_text(SLOW.replace("time.sleep(30)", "print('done')"))
    await h.manager.resume(first)
    assert (await h.finished(first)).state == "succeeded"
    with pytest.raises(Exception, match="already succeeded"):
        await h.manager.resume(first)


async def test_resume_with_variables_runs_with_them_and_stores_them_merged(h: Harness) -> None:
    path = h.write("copy.yaml", READ_THEN_WRITE)
    run_id = await h.manager.launch(path, {"target": "copy.txt"})  # in.txt is missing: `read` fails
    assert (await h.finished(run_id)).state == "failed"
    assert (await h.runs.get_run(run_id)).variables == {"source": "in.txt", "target": "copy.txt"}
    (h.folder / "other.txt").write_text("from the other file")
    with pytest.raises(WorkflowError, match="no variable `sorce`"):
        await h.manager.resume(run_id, variables={"sorce": "other.txt"})
    assert (await h.runs.get_run(run_id)).variables == {"source": "in.txt", "target": "copy.txt"}

    await h.manager.resume(run_id, variables={"source": "other.txt"})
    assert (await h.finished(run_id)).state == "succeeded"
    assert (h.folder / "copy.txt").read_text() == "copied: from the other file"
    assert not (h.folder / "out.txt").exists()  # the target the run was started with still holds
    # What the run now ran with: the file's defaults, the launch's values, then the resume's.
    assert (await h.runs.get_run(run_id)).variables == {"source": "other.txt", "target": "copy.txt"}


async def test_a_run_of_a_dead_process_is_interrupted_and_resumable(h: Harness) -> None:
    path = h.write("copy.yaml", READ_THEN_WRITE)
    record = await h.runs.create_run("copy", file=str(path.resolve()), task_ids=["read", "write"])
    await h.runs.set_run_state(record.id, "running")
    # a pid that cannot be alive: the process was killed
    await h.store.write(lambda conn: conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (2**22 + 12345, record.id)))
    assert run_state_now(await h.runs.get_run(record.id)) == "interrupted"
    (h.folder / "in.txt").write_text("x")
    await h.manager.resume(record.id)
    assert (await h.finished(record.id)).state == "succeeded"
    assert run_state_now(await h.runs.get_run(record.id)) == "succeeded"


async def test_tool_calls_wait_for_the_gate(tmp_path: Path) -> None:
    h = await Harness.open(tmp_path, Policy(defaults={"write": "ask"}))
    try:
        (tmp_path / "in.txt").write_text("hi")
        run_id = await h.manager.launch(h.write("copy.yaml", READ_THEN_WRITE))
        asked = await h.asked()
        (pending,) = h.gate.waiting(run_id=run_id)
        assert pending == asked.request
        assert pending.call.run_id == run_id and pending.call.task_id == "write"
        assert pending.where == f"task write of run {run_id}"
        h.gate.answer(pending.call.id, Decision("deny"))
        assert (await h.finished(run_id)).state == "failed"
        assert "denied" in (await h.runs.task_records(run_id))["write"].error
        assert not (tmp_path / "out.txt").exists()
    finally:
        await h.close()


async def test_llm_tasks_use_the_provided_model(tmp_path: Path) -> None:
    h = await Harness.open(tmp_path, backend=ScriptedBackend(["Hello there"]))
    try:
        run_id = await h.manager.launch(h.write("ask.yaml", LLM))
        assert (await h.finished(run_id)).state == "succeeded"
        assert (await h.runs.task_outputs(run_id, "answer")) == {"reply": "Hello there"}
        assert (await h.runs.task_records(run_id))["answer"].rendered["prompt"] == "Say hello"
    finally:
        await h.close()


class UnloadableBackend(ScriptedBackend):
    async def load(self, progress=None) -> None:  # noqa: ANN001
        raise ModelError("/models/x.gguf is not a GGUF model file")


async def test_llm_tasks_on_a_model_that_fails_to_load_fail_with_the_reason(tmp_path: Path) -> None:
    h = await Harness.open(tmp_path, backend=UnloadableBackend())
    try:
        run_id = await h.manager.launch(h.write("ask.yaml", LLM))
        assert (await h.finished(run_id)).state == "failed"
        error = (await h.runs.task_records(run_id))["answer"].error
        assert "not a GGUF model file" in error and "\n" not in error and "Traceback" not in error
    finally:
        await h.close()


async def test_llm_tasks_without_a_model_fail_clearly(h: Harness) -> None:
    run_id = await h.manager.launch(h.write("ask.yaml", LLM))
    assert (await h.finished(run_id)).state == "failed"
    assert "no model" in (await h.runs.task_records(run_id))["answer"].error


async def test_catalog_lists_folders_problems_and_recent_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "workflows").mkdir(parents=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (project / "workflows" / "copy.yaml").write_text(READ_THEN_WRITE)
    (mine / "broken.yml").write_text("workflow:\n  id: b\n  tasks: [\n")
    (mine / "notes.txt").write_text("not a workflow")
    async with await Store.open(tmp_path / "smoltui.db") as store:
        runs = RunStore(store)
        catalog = WorkflowCatalog(default_folders(project, mine, ["~/nowhere-smoltui-test"]),
                                  {t.name: t for t in builtin_tools()}, runs)
        snapshot = await catalog.scan()
        assert [f.label for f in snapshot.folders][:2] == ["project", "mine"]
        assert [f.label for f in snapshot.missing] == ["~/nowhere-smoltui-test"]
        (copy,) = snapshot.in_folder(snapshot.folders[0])
        assert copy.valid and copy.title == "Copy a note" and copy.variables == {"source": "in.txt",
                                                                                  "target": "out.txt"}
        (broken,) = snapshot.in_folder(snapshot.folders[1])
        assert not broken.valid and "broken.yml:4:1: YAML syntax error" in str(broken.problems[0])
        record = await runs.create_run("copy", file=str(copy.path), task_ids=["read"])
        await runs.set_run_state(record.id, "failed")
        (copy,) = (await catalog.scan()).in_folder(snapshot.folders[0])
        assert [(r.id, r.state) for r in copy.runs] == [(record.id, "failed")]
        assert copy.runs[0].duration_s is not None
        # Editing a file changes the files' stamp and the entry.
        stamp = catalog.files_stamp()
        path = project / "workflows" / "copy.yaml"
        path.write_text(READ_THEN_WRITE.replace("Copy a note", "Copy it"))
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        assert catalog.files_stamp() != stamp
        assert (await catalog.scan()).in_folder(snapshot.folders[0])[0].title == "Copy it"


async def test_time_waiting_for_approval_does_not_count_against_the_timeout(tmp_path: Path) -> None:
    h = await Harness.open(tmp_path, Policy(defaults={"write": "ask"}))
    try:
        (tmp_path / "in.txt").write_text("hi")
        quick = READ_THEN_WRITE.replace("      depends_on: [read]\n", "      depends_on: [read]\n      timeout: 1\n")
        run_id = await h.manager.launch(h.write("copy.yaml", quick))
        asked = await h.asked()
        # The user reads the request for longer than the task may run: the time itself is the point.
        await asyncio.sleep(1.5)
        h.gate.answer(asked.call.id, Decision("once"))
        assert (await h.finished(run_id)).state == "succeeded"
        assert (tmp_path / "out.txt").read_text() == "copied: hi"
    finally:
        await h.close()


# -- runs you can manage --------------------------------------------------------------------------


async def test_an_llm_task_keeps_its_tokens_speed_and_time(tmp_path: Path) -> None:
    h = await Harness.open(tmp_path, backend=ScriptedBackend(["Hello there, how are you"], delay_s=0.001))
    try:
        run_id = await h.manager.launch(h.write("ask.yaml", LLM))
        assert (await h.finished(run_id)).state == "succeeded"
        stats = (await h.runs.task_records(run_id))["answer"].rendered["stats"]
        assert stats["completion_tokens"] == 5 and stats["prompt_tokens"] > 0
        assert stats["decode_tok_s"] > 0 and stats["total_s"] > 0 and stats["stop_reason"] == "stop"
    finally:
        await h.close()


async def test_rerun_starts_a_new_run_with_the_same_variables(h: Harness) -> None:
    (h.folder / "in.txt").write_text("hello")
    path = h.write("copy.yaml", READ_THEN_WRITE)
    first = await h.manager.launch(path, {"target": "first.txt"})
    assert (await h.finished(first)).state == "succeeded"
    (h.folder / "first.txt").unlink()
    second = await h.manager.rerun(first)
    assert second != first
    assert (await h.finished(second)).state == "succeeded"
    assert (await h.runs.get_run(second)).variables == {"source": "in.txt", "target": "first.txt"}
    assert (h.folder / "first.txt").read_text() == "copied: hello"


async def test_a_run_is_deleted_with_its_artifacts_and_a_running_one_is_refused(h: Harness) -> None:
    slow = h.write("slow.yaml", SLOW)
    running = await h.manager.launch(slow)
    with pytest.raises(SmoltuiError, match="cancel it first"):
        await h.manager.delete(running)
    with pytest.raises(RunInUse, match="cancel it"):  # the store refuses it too
        await h.runs.delete_run(running)
    h.manager.cancel(running)
    assert (await h.finished(running)).state == "cancelled"
    artifacts = h.runs.artifacts_dir(running)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "table.parquet").write_bytes(b"x")
    await h.manager.delete(running)
    assert await h.runs.find_run(running) is None
    assert await h.runs.task_states(running) == {} and await h.runs.events(running) == []
    assert not (h.runs.runs_dir / running).exists()
    with pytest.raises(SmoltuiError, match="no workflow run"):
        await h.manager.delete(running)


async def test_prune_deletes_the_runs_that_ended_before_the_cutoff(h: Harness) -> None:
    (h.folder / "in.txt").write_text("hello")
    path = h.write("copy.yaml", READ_THEN_WRITE)
    old, new = await h.manager.launch(path), None
    assert (await h.finished(old)).state == "succeeded"
    new = await h.manager.launch(path, {"target": "again.txt"})
    assert (await h.finished(new)).state == "succeeded"
    ten_days_ago = time.time() - 10 * 86400
    await h.store.write(lambda conn: conn.execute("UPDATE runs SET created_at = ?, updated_at = ? WHERE id = ?",
                                                  (ten_days_ago, ten_days_ago, old)))
    assert await h.runs.prune_runs(7 * 86400) == ([old], [])
    assert [r.id for r in await h.runs.list_runs()] == [new]
