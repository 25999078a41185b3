"""One driver per run: a run is driven by one process at a time, and every task runs once per attempt.

Real processes throughout: ``smoltui run`` / ``smoltui resume`` as a user starts them, killed with
SIGKILL where the guarantee is about a driver that died. Executions are counted by a tool plugin
(``tally``) that appends one line per call to a file outside any sandbox, with the pid of the
process that ran it; a call with ``hold`` waits until the test creates a gate file, so a driver
is caught mid-task by a condition, never by a clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tui.harness import build_app, store_fixture, wait_until  # noqa: F401

from smoltui.orchestrator.approval import ApprovalGate, Policy
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.events import EventBus, RunFinished
from smoltui.orchestrator.run_manager import LeaseLost, RunManager, run_state_now
from smoltui.orchestrator.run_store import HOST, STALE_AFTER_S, RunBusy, RunStore
from smoltui.orchestrator.store import Store
from smoltui.screens.run_view import RunScreen
from smoltui.tools.registry import ToolRegistry
from tests.fixtures.tally import Tally


def _until(condition: Callable[[], object], what: str, *procs: subprocess.Popen[str], timeout: float = 30) -> None:
    """Wait until ``condition()`` holds; fail if it does not in time or a process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"waiting for {what}, the process ended: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _kill(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def tally(tmp_path: Path, cli_env: dict[str, str], home: Path) -> Tally:
    return Tally(tmp_path, cli_env, home)


def _start_held(tally: Tally) -> tuple[subprocess.Popen[str], str]:
    """``smoltui run`` of the tally workflow, caught while its second task holds."""
    driver = tally.smoltui("run", str(tally.workflow), "--approve", "tally")
    _until(lambda: ("second", driver.pid) in tally.calls(), "the second task to run", driver)
    run_id = tally.states()[0]
    assert run_id is not None
    return driver, run_id


def test_resume_of_a_run_being_driven_is_refused_naming_the_driver(tally: Tally) -> None:
    driver, run_id = _start_held(tally)
    try:
        refused = tally.smoltui("resume", run_id, "--approve", "tally")
        _, err = refused.communicate(timeout=60)
        assert refused.returncode != 0
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"run {run_id} is being driven by pid {driver.pid} on {HOST}" in err

        tally.gate.touch()
        out, err = driver.communicate(timeout=60)
        assert driver.returncode == 0, out + err
    finally:
        _kill(driver)
    # Every task ran once, all by the driver: the refused resume ran nothing.
    assert tally.calls() == [("first", driver.pid), ("second", driver.pid), ("third", driver.pid)]


def test_two_resumes_of_a_killed_run_let_exactly_one_proceed(tally: Tally) -> None:
    driver, run_id = _start_held(tally)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=10)

    resumes = [tally.smoltui("resume", run_id, "--approve", "tally") for _ in range(2)]
    try:
        # The one that loses is refused while the winner holds in `second` (the gate is shut).
        _until(lambda: any(r.poll() is not None for r in resumes), "one resume to be refused", timeout=60)
        loser = next(r for r in resumes if r.poll() is not None)
        winner = next(r for r in resumes if r is not loser)
        _, loser_err = loser.communicate()
        assert loser.returncode != 0, loser_err
        assert f"is being driven by pid {winner.pid} on {HOST}" in loser_err

        tally.gate.touch()
        out, err = winner.communicate(timeout=60)
        assert winner.returncode == 0, out + err
        assert "first: running" not in out  # finished in the killed attempt: not run again
    finally:
        _kill(*resumes)
    # One execution per attempt: `second` ran in the killed attempt and in the winner's, nothing twice.
    assert tally.calls() == [("first", driver.pid), ("second", driver.pid),
                             ("second", winner.pid), ("third", winner.pid)]
    assert tally.states()[1] == {"first": "succeeded", "second": "succeeded", "third": "succeeded"}


# -- the lease itself, in one process --------------------------------------------------------------


async def _forge_lease(store: Store, run_id: str, *, pid: int, host: str = HOST, age_s: float = 0.0,
                       token: str = "someone-elses") -> None:
    stamp = time.time() - age_s
    await store.write(lambda conn: conn.execute(
        "INSERT OR REPLACE INTO run_leases (run_id, token, pid, host, heartbeat, acquired_at)"
        " VALUES (?, ?, ?, ?, ?, ?)", (run_id, token, pid, host, stamp, stamp)))


COUNTED = """\
workflow:
  id: counted
  tasks:
    - {id: first, type: tool_call, tool: count, inputs: {name: first}}
    - {id: second, type: tool_call, tool: count, depends_on: [first], inputs: {name: second}}
    - {id: third, type: tool_call, tool: count, depends_on: [second], inputs: {name: third}}
"""


async def test_two_resumes_in_the_same_instant_run_each_task_once(tmp_path: Path) -> None:
    """Two drivers (two connections to the file, as two processes have) resume a killed run at
    the very same moment: exactly one goes ahead, and each task runs once."""
    from smoltui.tools.base import tool

    executed: list[str] = []

    @tool(risk="read")
    def count(name: str) -> str:
        """Count one execution.

        Args:
            name: What ran.
        """
        executed.append(name)
        return name

    path = tmp_path / "counted.yaml"
    path.write_text(COUNTED, encoding="utf-8")
    stores = [await Store.open(tmp_path / "smoltui.db") for _ in range(2)]
    managers = []
    for store in stores:
        bus = EventBus()
        gate = ApprovalGate(ToolRegistry([count]), Policy(defaults={"read": "auto"}), audit=AuditLog(store),
                            bus=bus, timeout_s=None)
        managers.append(RunManager(RunStore(store), gate=gate, bus=bus, tools={"count": count}))
    try:
        runs = RunStore(stores[0])
        record = await runs.create_run("counted", file=str(path), task_ids=["first", "second", "third"])
        await runs.set_run_state(record.id, "running")
        dead = await asyncio.create_subprocess_exec("true")
        await dead.wait()  # its driver, killed before it claimed anything
        await stores[0].write(lambda conn: conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (dead.pid, record.id)))
        assert run_state_now(await runs.get_run(record.id)) == "interrupted"

        outcomes = await asyncio.gather(*(m.resume(record.id) for m in managers), return_exceptions=True)
        assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "RunBusy"], outcomes
        winner = managers[outcomes.index(None)]
        result = await asyncio.wait_for(winner.wait(record.id), 20)
        assert result is not None and result.state == "succeeded"
        assert executed == ["first", "second", "third"]
    finally:
        for manager in managers:
            await manager.shutdown()
        for store in stores:
            await store.close()


async def test_a_lease_whose_owner_died_is_taken_over_and_a_live_one_is_not(store: Store) -> None:
    runs = RunStore(store)
    sleeper = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        await _forge_lease(store, "live", pid=sleeper.pid)
        with pytest.raises(RunBusy, match=f"run live is being driven by pid {sleeper.pid} on {HOST}"):
            await runs.claim("live")
        # Another host's process cannot be asked whether it lives: a fresh heartbeat says so.
        await _forge_lease(store, "far", pid=1, host="elsewhere")
        with pytest.raises(RunBusy, match="pid 1 on elsewhere"):
            await runs.claim("far")
    finally:
        sleeper.kill()
        await sleeper.wait()

    await _forge_lease(store, "live", pid=sleeper.pid)  # its owner is gone now
    await _forge_lease(store, "far", pid=1, host="elsewhere", age_s=STALE_AFTER_S + 1)  # silent too long
    await _forge_lease(store, "reused", pid=os.getpid())  # this pid, but a dead process's claim
    for run_id in ("live", "far", "reused"):
        lease = await runs.claim(run_id)
        assert (lease.pid, lease.host) == (os.getpid(), HOST)
        with pytest.raises(RunBusy):  # and now it is ours: a second claim is refused
            await runs.claim(run_id)
        await runs.release(lease)
    assert await store.fetch("SELECT * FROM run_leases") == []


async def test_a_driver_that_stops_renewing_its_lease_is_announced_as_interrupted(store: Store) -> None:
    """A driver on another machine (its pid cannot be asked) that hangs or dies: its heartbeat ages."""
    from smoltui.orchestrator.events import RunsChanged
    from smoltui.orchestrator.watcher import Watcher
    from smoltui.orchestrator.workflow_catalog import WorkflowCatalog

    runs = RunStore(store)
    record = await runs.create_run("demo", task_ids=["a"])
    await runs.set_run_state(record.id, "running")
    await runs.set_task_state(record.id, "a", "running")
    await _forge_lease(store, record.id, pid=1, host="elsewhere")
    bus = EventBus()
    events: list[object] = []
    bus.subscribe(events.append)
    watcher = Watcher(runs, WorkflowCatalog([], {}, runs), bus)
    await watcher.check()  # the baseline: another host drives this run
    await watcher.check()
    assert events == [] and run_state_now(await runs.get_run(record.id)) == "running"

    await store.write(lambda conn: conn.execute("UPDATE run_leases SET heartbeat = heartbeat - ?", (STALE_AFTER_S + 1,)))
    await watcher.check()
    assert events == [RunsChanged((record.id,))]
    assert run_state_now(await runs.get_run(record.id)) == "interrupted"
    assert await runs.task_states(record.id) == {"a": "interrupted"}
    await watcher.check()  # said once
    assert events == [RunsChanged((record.id,))]


async def test_a_driver_that_lost_its_lease_stops_and_writes_nothing_more(store: Store, tmp_path: Path) -> None:
    """Another process took the run over (this one looked dead to it): this one stops driving at
    once, and its last writes are refused instead of landing on the new driver's run."""
    from smoltui.tools.builtins import builtin_tools

    path = tmp_path / "slow.yaml"
    path.write_text("workflow:\n  id: slow\n  tasks:\n    - {id: wait, type: tool_call, tool: python, "
                    "inputs: {code: 'import time; time.sleep(30)'}}\n", encoding="utf-8")
    bus = EventBus()
    events: list[object] = []
    bus.subscribe(events.append)
    tools = {t.name: t for t in builtin_tools()}
    gate = ApprovalGate(ToolRegistry(tools.values()), Policy(defaults={"execute": "auto"}), audit=AuditLog(store),
                        bus=bus, timeout_s=None)
    runs = RunStore(store)
    manager = RunManager(runs, gate=gate, bus=bus, tools=tools)
    manager.heartbeat_s = 0.05
    run_id = await manager.launch(path)
    try:
        deadline = time.monotonic() + 20
        while (await runs.task_states(run_id)).get("wait") != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # The takeover, as another process's claim writes it.
        await store.write(lambda conn: conn.execute(
            "UPDATE run_leases SET token = 'theirs', pid = 1, host = 'elsewhere' WHERE run_id = ?", (run_id,)))
        with pytest.raises(LeaseLost, match="taken over by pid 1 on elsewhere"):
            await asyncio.wait_for(manager.wait(run_id), 20)
    finally:
        await manager.shutdown()
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert finished and finished[-1].state == "interrupted"
    # Nothing after the takeover: the task is still "running" for its new driver, not "cancelled".
    assert await runs.task_states(run_id) == {"wait": "running"}
    assert (await runs.get_run(run_id)).state == "running"
    assert await store.fetch("SELECT token FROM run_leases") == [("theirs",)]


async def test_the_tui_resume_is_refused_with_the_same_message(store: Store, tmp_path: Path) -> None:
    """A run another terminal has just claimed (its state not yet changed): `u` in the run view
    says who drives it, and starts nothing."""
    path = tmp_path / "one.yaml"
    path.write_text("workflow:\n  id: one\n  tasks:\n    - {id: a, type: tool_call, tool: read_file, "
                    "inputs: {path: x}}\n", encoding="utf-8")
    runs = RunStore(store)
    record = await runs.create_run("one", file=str(path), task_ids=["a"])
    await runs.set_run_state(record.id, "failed")
    sleeper = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        await _forge_lease(store, record.id, pid=sleeper.pid)
        app = build_app(store, None, tmp_path)
        async with app.run_test() as pilot:
            await app.push_screen(RunScreen(app.core, record.id))
            screen = app.screen
            await wait_until(pilot, lambda: screen.loaded is not None, "the run to load")
            await pilot.press("u")
            expected = f"run {record.id} is being driven by pid {sleeper.pid} on {HOST}"
            await wait_until(pilot, lambda: any(expected in str(n.message) for n in app.shown_notifications),
                             "the refusal")
            assert not app.core.runs.is_running(record.id)
        assert run_state_now(await runs.get_run(record.id)) == "failed"
    finally:
        sleeper.kill()
        await sleeper.wait()
