"""Run log lines: levels, the one text format (same as `smoltui logs`), and the store tail."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from smoltui.cli.workflows import _print_event
from smoltui.orchestrator.run_log import LogRecord, RunLogTail, format_line, level_of
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.store import Store
from tests.test_cli import run


@pytest_asyncio.fixture
async def run_store(tmp_path: Path) -> AsyncIterator[RunStore]:
    store = await Store.open(tmp_path / "smoltui.db")
    try:
        yield RunStore(store)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("kind", "message", "level"),
    [
        ("run_state", "running", "info"),
        ("run_state", "succeeded", "info"),
        ("run_state", "failed", "error"),
        ("run_state", "cancelled", "warning"),
        ("task_state", "failed", "error"),
        ("task_state", "upstream_failed", "error"),
        ("task_state", "cancelled", "warning"),
        ("task_state", "skipped", "info"),
        ("log", "failed: ToolError: no such file", "error"),
        ("log", "attempt 1/3 failed: timeout; retrying in 2s", "warning"),
        ("log", "skipped: condition is false", "info"),
        ("log", "condition is true: running `a`", "info"),
        ("log", "the task failed: not a prefix", "info"),
    ],
)
def test_level_of(kind: str, message: str, level: str) -> None:
    assert level_of(kind, message) == level


async def test_format_line_is_what_smoltui_logs_prints(home: Path, cli_env: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    async with await Store.open(home / "smoltui.db") as store:
        runs = RunStore(store)
        run_id = (await runs.create_run("demo", task_ids=["read"])).id
        await runs.add_event(run_id, "run_state", "running")
        await runs.add_event(run_id, "task_state", "running", "read")
        await runs.add_event(run_id, "log", "attempt 1/2 failed: boom; retrying in 1s", "read")
        events = await runs.events(run_id)
    records = [LogRecord.from_event(event) for event in events]
    printed = run(cli_env, "logs", run_id)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == [format_line(r) for r in records]
    when = time.strftime("%H:%M:%S", time.localtime(events[2].created_at))
    assert format_line(records[2]) == f"{when} read: log: attempt 1/2 failed: boom; retrying in 1s"
    assert format_line(records[0], timestamps=False) == "run: run_state: running"
    assert format_line(records[1], timestamps=False, show_run=True) == f"[{run_id}] read: task_state: running"
    # the CLI's own printer goes through format_line
    _print_event(events[1], False)
    assert capsys.readouterr().out == format_line(records[1]) + "\n"


async def test_tail_all_runs_backfills_then_returns_only_new_lines(run_store: RunStore, tmp_path: Path) -> None:
    first = (await run_store.create_run("a")).id
    for n in range(10):
        await run_store.add_event(first, "log", f"old {n}", "t")
    tail = RunLogTail(run_store, backfill=4)
    assert [r.message for r in await tail.poll()] == ["old 6", "old 7", "old 8", "old 9"]
    assert await tail.poll() == []
    # a second connection (another process) writes to a run created after the tail started
    async with await Store.open(tmp_path / "smoltui.db") as other:
        second = (await RunStore(other).create_run("b")).id
        await RunStore(other).add_event(second, "task_state", "failed", "x")
    await run_store.add_event(first, "log", "new", "t")
    records = await tail.poll()
    assert [(r.run_id, r.message, r.level) for r in records] == [(second, "failed", "error"), (first, "new", "info")]
    # the older lines the backfill left out, for one run, oldest first
    assert [r.message for r in await tail.history(first, limit=3)] == ["old 3", "old 4", "old 5"]
    assert await tail.history(second) == []


async def test_tail_given_runs_and_no_duplicates_across_modes(run_store: RunStore) -> None:
    a = (await run_store.create_run("a")).id
    b = (await run_store.create_run("b")).id
    await run_store.add_event(a, "log", "a1")
    await run_store.add_event(b, "log", "b1")
    tail = RunLogTail(run_store, backfill=100)
    assert [r.message for r in await tail.poll([a])] == ["a1"]
    await run_store.add_event(a, "log", "a2")
    await run_store.add_event(b, "log", "b2")
    assert [r.message for r in await tail.poll([a])] == ["a2"]
    # all runs now: b's lines (backfill), but nothing of a's twice
    assert [r.message for r in await tail.poll()] == ["b1", "b2"]
    await run_store.add_event(a, "log", "a3")
    assert [r.message for r in await tail.poll([a, b])] == ["a3"]
    assert await tail.poll() == []
    assert await tail.poll([b]) == []


async def test_tail_of_an_empty_store_sees_the_first_lines(run_store: RunStore) -> None:
    tail = RunLogTail(run_store, backfill=10, batch=3)
    assert await tail.poll() == []
    run_id = (await run_store.create_run("a")).id
    for n in range(7):  # more than one batch between two polls
        await run_store.add_event(run_id, "log", f"line {n}")
    assert [r.message for r in await tail.poll()] == [f"line {n}" for n in range(7)]
