"""RunManager (launch, cancel, resume, retry, several runs at once) and the workflow catalog, headless.

Real pieces: a SQLite store in tmp_path, the real approval gate and built-in file tools, workflow
files on disk. Approvals are answered through the gate, as the TUI does.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from pathlib import Path

import pytest

from smoltui.backends.scripted import ScriptedBackend
from smoltui.orchestrator.approval import ApprovalGate, ApprovalNeeded, Decision, Policy
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.events import EventBus
from smoltui.orchestrator.run_manager import RunFinished, RunManager, run_state_now
from smoltui.orchestrator.run_store import RunStore
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
    def __init__(self, folder: Path, policy: Policy | None = None, backend=None) -> None:
        self.folder = folder
        self.store = Store.open(folder / "smoltui.db")
        self.runs = RunStore(self.store)
        self.bus = EventBus()
        self.events: list = []
        self.bus.subscribe(self.events.append)
        tools = {t.name: t for t in builtin_tools()}
        self.tools = tools
        self.gate = ApprovalGate(ToolRegistry(tools.values()), policy or Policy(defaults={"write": "auto",
                                                                                             "execute": "auto"}),
                                 audit=AuditLog(self.store), bus=self.bus, timeout_s=None)

        async def provide():
            await backend.load()
            return backend

        self.manager = RunManager(self.runs, gate=self.gate, bus=self.bus,
                                  backend=provide if backend is not None else None, tools=tools)

    def write(self, name: str, text: str) -> Path:
        path = self.folder / name
        path.write_text(textwrap.dedent(text))
        return path

    async def finished(self, run_id: str, timeout: float = 20) -> RunFinished:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if isinstance(event, RunFinished) and event.run_id == run_id:
                    self.events.remove(event)
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"run {run_id} did not finish")


@pytest.fixture
def h(tmp_path: Path):
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


async def test_launch_runs_the_workflow_and_stores_rendered_inputs(h: Harness) -> None:
    (h.folder / "in.txt").write_text("hello")
    path = h.write("copy.yaml", READ_THEN_WRITE)
    run_id = await h.manager.launch(path, {"target": "copy.txt"})
    assert h.runs.get_run(run_id).file == str(path.resolve())
    assert (await h.finished(run_id)).state == "succeeded"
    assert (h.folder / "copy.txt").read_text() == "copied: hello"
    records = h.runs.task_records(run_id)
    assert records["write"].rendered["inputs"] == {"path": "copy.txt", "content": "copied: hello"}
    assert h.runs.get_run(run_id).variables["target"] == "copy.txt"


async def test_launch_refuses_an_invalid_workflow_and_unknown_variables(h: Harness) -> None:
    broken = h.write("broken.yaml", READ_THEN_WRITE.replace("read_file", "raed_file"))
    with pytest.raises(WorkflowError, match="raed_file"):
        await h.manager.launch(broken)
    good = h.write("copy.yaml", READ_THEN_WRITE)
    with pytest.raises(WorkflowError, match="no variable"):
        await h.manager.launch(good, {"nope": 1})
    assert h.runs.list_runs() == []


async def test_retry_a_failed_task_reruns_it_and_its_dependents_only(h: Harness) -> None:
    path = h.write("copy.yaml", READ_THEN_WRITE)
    run_id = await h.manager.launch(path)  # in.txt is missing: `read` fails, `write` never runs
    assert (await h.finished(run_id)).state == "failed"
    assert h.runs.task_states(run_id) == {"read": "failed", "write": "upstream_failed"}
    with pytest.raises(Exception, match="did not fail"):
        await h.manager.retry_task(run_id, "nonexistent")
    (h.folder / "in.txt").write_text("second try")
    await h.manager.retry_task(run_id, "read")
    assert (await h.finished(run_id)).state == "succeeded"
    assert h.runs.task_states(run_id) == {"read": "succeeded", "write": "succeeded"}
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
    assert h.runs.task_states(run_id) == {"a": "succeeded", "b": "failed"}
    assert h.runs.task_records(run_id)["b"].attempt == 1  # not run again


async def test_cancel_then_resume_and_several_runs_at_once(h: Harness) -> None:
    slow = h.write("slow.yaml", SLOW)
    first = await h.manager.launch(slow)
    second = await h.manager.launch(slow)
    assert first != second and h.manager.is_running(first) and h.manager.is_running(second)
    for _ in range(200):
        if all(h.runs.task_states(r)["wait"] == "running" for r in (first, second)):
            break
        await asyncio.sleep(0.05)
    assert h.manager.cancel(first)
    assert (await h.finished(first)).state == "cancelled"
    assert h.runs.get_run(first).state == "cancelled"
    assert h.manager.is_running(second)
    h.manager.cancel(second)
    await h.finished(second)
    # Resume with a quick workflow body: the file changed since, the run's id and variables stay.
    slow.write_text(SLOW.replace("time.sleep(30)", "print('done')"))
    await h.manager.resume(first)
    assert (await h.finished(first)).state == "succeeded"
    with pytest.raises(Exception, match="already succeeded"):
        await h.manager.resume(first)


async def test_a_run_of_a_dead_process_is_interrupted_and_resumable(h: Harness) -> None:
    path = h.write("copy.yaml", READ_THEN_WRITE)
    record = h.runs.create_run("copy", file=str(path.resolve()), task_ids=["read", "write"])
    h.runs.set_run_state(record.id, "running")
    with h.store._write() as conn:  # a pid that cannot be alive: the process was killed
        conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (2**22 + 12345, record.id))
    assert run_state_now(h.runs.get_run(record.id)) == "interrupted"
    (h.folder / "in.txt").write_text("x")
    await h.manager.resume(record.id)
    assert (await h.finished(record.id)).state == "succeeded"
    assert run_state_now(h.runs.get_run(record.id)) == "succeeded"


async def test_tool_calls_wait_for_the_gate(tmp_path: Path) -> None:
    h = Harness(tmp_path, Policy(defaults={"write": "ask"}))
    try:
        (tmp_path / "in.txt").write_text("hi")
        run_id = await h.manager.launch(h.write("copy.yaml", READ_THEN_WRITE))
        for _ in range(200):
            if h.gate.pending:
                break
            await asyncio.sleep(0.02)
        (pending,) = h.gate.pending.values()
        assert pending.call.run_id == run_id and pending.call.task_id == "write"
        assert any(isinstance(e, ApprovalNeeded) for e in h.events)
        h.gate.answer(pending.call.id, Decision("deny"))
        assert (await h.finished(run_id)).state == "failed"
        assert "denied" in h.runs.task_records(run_id)["write"].error
        assert not (tmp_path / "out.txt").exists()
    finally:
        h.store.close()


async def test_llm_tasks_use_the_provided_model(tmp_path: Path) -> None:
    h = Harness(tmp_path, backend=ScriptedBackend(["Hello there"]))
    try:
        run_id = await h.manager.launch(h.write("ask.yaml", LLM))
        assert (await h.finished(run_id)).state == "succeeded"
        assert h.runs.task_outputs(run_id, "answer") == {"reply": "Hello there"}
        assert h.runs.task_records(run_id)["answer"].rendered["prompt"] == "Say hello"
    finally:
        h.store.close()


async def test_llm_tasks_without_a_model_fail_clearly(h: Harness) -> None:
    run_id = await h.manager.launch(h.write("ask.yaml", LLM))
    assert (await h.finished(run_id)).state == "failed"
    assert "no model" in h.runs.task_records(run_id)["answer"].error


def test_catalog_lists_folders_problems_and_recent_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "workflows").mkdir(parents=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (project / "workflows" / "copy.yaml").write_text(READ_THEN_WRITE)
    (mine / "broken.yml").write_text("workflow:\n  id: b\n  tasks: [\n")
    (mine / "notes.txt").write_text("not a workflow")
    with Store.open(tmp_path / "smoltui.db") as store:
        runs = RunStore(store)
        catalog = WorkflowCatalog(default_folders(project, mine, ["~/nowhere-smoltui-test"]),
                                  {t.name: t for t in builtin_tools()}, runs)
        before = catalog.fingerprint()
        snapshot = catalog.scan()
        assert [f.label for f in snapshot.folders][:2] == ["project", "mine"]
        assert [f.label for f in snapshot.missing] == ["~/nowhere-smoltui-test"]
        (copy,) = snapshot.in_folder(snapshot.folders[0])
        assert copy.valid and copy.title == "Copy a note" and copy.variables == {"source": "in.txt",
                                                                                  "target": "out.txt"}
        (broken,) = snapshot.in_folder(snapshot.folders[1])
        assert not broken.valid and "broken.yml:4:1: YAML syntax error" in str(broken.problems[0])
        record = runs.create_run("copy", file=str(copy.path), task_ids=["read"])
        runs.set_run_state(record.id, "failed")
        assert catalog.fingerprint() != before
        (copy,) = catalog.scan().in_folder(snapshot.folders[0])
        assert [(r.id, r.state) for r in copy.runs] == [(record.id, "failed")]
        assert copy.runs[0].duration_s is not None
        # Editing a file changes the fingerprint and the entry.
        stamp = catalog.fingerprint()
        path = project / "workflows" / "copy.yaml"
        path.write_text(READ_THEN_WRITE.replace("Copy a note", "Copy it"))
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        assert catalog.fingerprint() != stamp
        assert catalog.scan().in_folder(snapshot.folders[0])[0].title == "Copy it"


async def test_time_waiting_for_approval_does_not_count_against_the_timeout(tmp_path: Path) -> None:
    h = Harness(tmp_path, Policy(defaults={"write": "ask"}))
    try:
        (tmp_path / "in.txt").write_text("hi")
        quick = READ_THEN_WRITE.replace("      depends_on: [read]\n", "      depends_on: [read]\n      timeout: 1\n")
        run_id = await h.manager.launch(h.write("copy.yaml", quick))
        for _ in range(200):
            if h.gate.pending:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.5)  # the user reads the request for longer than the task may run
        (pending,) = h.gate.pending.values()
        h.gate.answer(pending.call.id, Decision("once"))
        assert (await h.finished(run_id)).state == "succeeded"
        assert (tmp_path / "out.txt").read_text() == "copied: hi"
    finally:
        h.store.close()
