"""The core's watcher: what other processes change in the store, a run whose driving process died,
and workflow files edited on disk reach the bus (and nothing this process announces itself).

Real second processes throughout: a Python process that writes through smoltui's own store, and a
``sleep`` whose pid is stored as a run's driver and then killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio
from tui.harness import store_fixture  # noqa: F401

from smoltui.orchestrator.events import EventBus, RunsChanged, WorkflowsChanged
from smoltui.orchestrator.run_manager import run_state_now
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.watcher import Watcher
from smoltui.orchestrator.workflow_catalog import WorkflowCatalog, WorkflowFolder

REPO = Path(__file__).resolve().parents[1]

WORKFLOW = "workflow:\n  id: {id}\n  tasks:\n    - {{id: a, type: tool_call, tool: read_file, inputs: {{path: x}}}}\n"


@dataclass
class Watched:
    store: Store
    runs: RunStore
    folder: Path
    watcher: Watcher
    events: list[object] = field(default_factory=list)

    def take(self) -> list[object]:
        """The events published since the last call."""
        taken, self.events[:] = list(self.events), []
        return taken


@pytest_asyncio.fixture
async def watched(store: Store, tmp_path: Path) -> AsyncIterator[Watched]:
    folder = tmp_path / "workflows"
    folder.mkdir()
    runs = RunStore(store)
    bus = EventBus()
    watcher = Watcher(runs, WorkflowCatalog([WorkflowFolder("project", folder)], {}, runs), bus)
    state = Watched(store, runs, folder, watcher)
    bus.subscribe(state.events.append)
    yield state
    await watcher.stop()


async def in_another_process(db: Path, body: str, *args: str) -> None:
    """Run ``body`` in a second Python process, with ``runs`` (a RunStore over ``db``, through
    smoltui's own store) and ``args`` in scope."""
    script = "\n".join([
        "import asyncio, sys",
        "from smoltui.orchestrator.run_store import RunStore",
        "from smoltui.orchestrator.store import Store",
        "async def main(args):",
        "    async with await Store.open(sys.argv[1]) as store:",
        "        runs = RunStore(store)",
        textwrap.indent(textwrap.dedent(body).strip(), " " * 8),
        "asyncio.run(main(sys.argv[2:]))",
    ])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(db), *args, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()


async def test_a_run_another_process_changes_is_announced_and_this_processs_own_writes_are_not(
    watched: Watched,
) -> None:
    run = await watched.runs.create_run("demo", task_ids=["a"])
    await watched.watcher.check()  # the first check only takes a baseline
    assert watched.take() == []
    # This process's own writes: whoever wrote them (the scheduler) announced them already.
    await watched.runs.set_task_state(run.id, "a", "running")
    await watched.watcher.check()
    assert watched.take() == []

    await in_another_process(watched.store.path, "await runs.set_run_state(args[0], 'failed')", run.id)
    await watched.watcher.check()
    assert watched.take() == [RunsChanged((run.id,))]
    await watched.watcher.check()  # said once
    assert watched.take() == []


async def test_log_lines_another_process_adds_are_announced(watched: Watched) -> None:
    # A retry's log line changes no run or task row; the log panes must still hear of it.
    run = await watched.runs.create_run("demo", task_ids=["a"])
    await watched.runs.create_run("quiet", task_ids=["b"])
    async with watched.store.batch() as conn:  # both last changed an hour ago
        await conn.execute("UPDATE runs SET updated_at = updated_at - 3600")
    await watched.watcher.check()
    await in_another_process(watched.store.path,
                             "await runs.add_event(args[0], 'log', 'attempt 1/3 failed: boom; retrying in 1s', 'a')",
                             run.id)
    await watched.watcher.check()
    assert watched.take() == [RunsChanged((run.id,))]  # not the quiet one


async def test_a_run_whose_driving_process_dies_is_announced(watched: Watched) -> None:
    driver = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        run = await watched.runs.create_run("demo", task_ids=["a"])
        async with watched.store.batch() as conn:  # what `smoltui run` in another terminal stores
            await conn.execute("UPDATE runs SET state = 'running', pid = ? WHERE id = ?", (driver.pid, run.id))
        await watched.watcher.check()  # the baseline: this run is another process's, running
        await watched.watcher.check()
        assert watched.take() == []
        assert run_state_now(await watched.runs.get_run(run.id)) == "running"

        driver.kill()  # killed: nothing in the store changes
        await driver.wait()
        await watched.watcher.check()
        assert watched.take() == [RunsChanged((run.id,))]
        assert run_state_now(await watched.runs.get_run(run.id)) == "interrupted"
        await watched.watcher.check()  # said once
        assert watched.take() == []
    finally:
        if driver.returncode is None:
            driver.kill()
            await driver.wait()


async def test_workflow_files_added_edited_and_removed_are_announced(watched: Watched) -> None:
    folder, watcher = watched.folder, watched.watcher
    (folder / "a.yaml").write_text(WORKFLOW.format(id="a"))
    await watcher.check()
    await watcher.check()
    assert watched.take() == []

    (folder / "a.yaml").write_text(WORKFLOW.format(id="a-edited"))  # an editor saves it
    await watcher.check()
    assert watched.take() == [WorkflowsChanged()]
    (folder / "b.yml").write_text(WORKFLOW.format(id="b"))
    await watcher.check()
    assert watched.take() == [WorkflowsChanged()]
    (folder / "b.yml").unlink()
    await watcher.check()
    assert watched.take() == [WorkflowsChanged()]
    (folder / "notes.txt").write_text("not a workflow")
    await watcher.check()
    assert watched.take() == []


async def test_started_it_looks_by_itself(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    runs = RunStore(store)
    bus = EventBus()
    heard = asyncio.Event()
    bus.subscribe(lambda event: heard.set() if isinstance(event, WorkflowsChanged) else None)
    watcher = Watcher(runs, WorkflowCatalog([WorkflowFolder("project", folder)], {}, runs), bus, interval_s=0.02)
    await watcher.check()  # the baseline, before the file (the loop's own first look may come later)
    watcher.start()
    watcher.start()  # once is enough
    try:
        (folder / "new.yaml").write_text(WORKFLOW.format(id="new"))
        await asyncio.wait_for(heard.wait(), timeout=5)
    finally:
        await watcher.stop()
    await watcher.stop()  # stopping twice is harmless
