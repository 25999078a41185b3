"""The live log pane in a tiny host app, over a real SQLite store (driven with Pilot).

The host does what the main screen does: it reads again when the bus says runs changed. Lines
another process writes reach that bus through a watcher, as in the app.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from tui.harness import wait_until

from smoltui.orchestrator.events import EventBus, RunsChanged
from smoltui.orchestrator.run_log import LogRecord, format_line
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.watcher import Watcher
from smoltui.orchestrator.workflow_catalog import WorkflowCatalog
from smoltui.screens.log_pane import LogLines, LogPane

SIZE = (100, 20)


class Host(App[None]):
    """The pane, read again when the bus says runs changed (as the main screen does)."""

    def __init__(self, run_store: RunStore, **options: object) -> None:
        super().__init__()
        self.run_store = run_store
        self.options = options
        self.bus = EventBus()
        self.watcher = Watcher(run_store, WorkflowCatalog([], {}, run_store), self.bus)

    def compose(self) -> ComposeResult:
        yield LogPane(self.run_store, id="logs", **self.options)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.query_one(LogPane).focus()
        self.bus.subscribe(lambda event: self.call_later(self._bus_event, event))

    def _bus_event(self, event: object) -> None:
        if isinstance(event, RunsChanged):
            self.query_one(LogPane).nudge()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "smoltui.db"


@pytest_asyncio.fixture
async def run_store(db: Path) -> AsyncIterator[RunStore]:
    store = await Store.open(db)
    try:
        yield RunStore(store)
    finally:
        await store.close()


async def records(run_store: RunStore, run_id: str) -> list[LogRecord]:
    return [LogRecord.from_event(event) for event in await run_store.events(run_id)]


def pane_of(pilot: Pilot) -> LogPane:
    return pilot.app.query_one(LogPane)


async def seed_failing_run(run_store: RunStore) -> str:
    run_id = (await run_store.create_run("demo", task_ids=["read", "save"])).id
    await run_store.add_event(run_id, "run_state", "running")
    await run_store.add_event(run_id, "task_state", "running", "read")
    await run_store.add_event(run_id, "log", "attempt 1/2 failed: disk busy; retrying in 1s", "read")
    await run_store.add_event(run_id, "log", "failed: disk gone", "read")
    await run_store.add_event(run_id, "task_state", "failed", "read")
    await run_store.add_event(run_id, "task_state", "upstream_failed", "save")
    await run_store.add_event(run_id, "run_state", "failed")
    return run_id


async def test_a_runs_lines_appear_as_smoltui_logs_prints_them(run_store: RunStore) -> None:
    run_id = await seed_failing_run(run_store)
    app = Host(run_store)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await pane.poll()
        await pilot.pause()
        expected = [format_line(r, show_run=True) for r in await records(run_store, run_id)]
        assert pane.visible_lines() == expected
        assert pane.status_text == "all runs · level: all · following · 7 of 7 lines"
        screen = app.export_screenshot().replace("&#160;", " ")
        assert "all runs · level: all · following · 7 of 7 lines" in screen  # the header line
        pane.run_id = run_id  # one run: no run column, the exact `smoltui logs` line
        await pane.poll()
        await pilot.pause()
        assert pane.visible_lines() == [format_line(r) for r in await records(run_store, run_id)]
        assert pane.status_text.startswith(f"run {run_id} · ")


async def test_lines_already_stored_show_when_the_pane_opens(run_store: RunStore) -> None:
    run_id = await seed_failing_run(run_store)
    app = Host(run_store)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)  # nothing polls it: it reads the store when it is mounted
        await wait_until(pilot, lambda: pane.line_count == 7, "the stored lines")
        assert pane.filtered_lines() == [format_line(r, show_run=True) for r in await records(run_store, run_id)]


async def test_lines_written_by_another_connection_appear_while_following(run_store: RunStore, db: Path) -> None:
    app = Host(run_store)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await wait_until(pilot, lambda: "0 of 0 lines" in pane.status_text, "the first poll")
        await app.watcher.check()  # its baseline
        async with await Store.open(db) as other:  # what `smoltui run` in another terminal does
            writer = RunStore(other)
            run_id = (await writer.create_run("elsewhere")).id
            for n in range(40):
                await writer.add_event(run_id, "log", f"step {n}", "work")
        await app.watcher.check()  # nothing in this process said so: the watcher notices
        await wait_until(pilot, lambda: pane.line_count == 40
                         and pane.visible_lines()[-1:] == pane.filtered_lines()[-1:], "the other process's lines")
        assert pane.visible_lines()[-1].endswith(f"[{run_id}] work: log: step 39")  # followed to the end
        assert len(pane.visible_lines()) == pane.query_one(LogLines).scrollable_content_region.height


async def test_level_filter_cycles_and_colours_by_level(run_store: RunStore) -> None:
    run_id = await seed_failing_run(run_store)
    app = Host(run_store)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        pane.run_id = run_id
        await pane.poll()
        await pilot.press("t")  # no timestamps: shorter expectations
        await pilot.press("l")
        assert pane.visible_lines() == [
            "read: log: attempt 1/2 failed: disk busy; retrying in 1s",
            "read: log: failed: disk gone",
            "read: task_state: failed",
            "save: task_state: upstream_failed",
            "run: run_state: failed",
        ]
        assert "level: warning+" in pane.status_text and "5 of 7 lines" in pane.status_text
        await pilot.press("l")
        assert pane.visible_lines() == [
            "read: log: failed: disk gone",
            "read: task_state: failed",
            "save: task_state: upstream_failed",
            "run: run_state: failed",
        ]
        assert "level: error" in pane.status_text
        await pilot.press("l")
        assert len(pane.visible_lines()) == 7 and "level: all" in pane.status_text

        view = pane.query_one(LogLines)
        error = view.get_component_rich_style("log-lines--error").color
        warning = view.get_component_rich_style("log-lines--warning").color
        assert error is not None and warning is not None and error != warning

        def colours(y: int) -> set[object]:
            return {seg.style.color for seg in view.render_line(y) if seg.text.strip() and seg.style}

        assert error not in colours(0) and warning not in colours(0)  # run: running
        assert warning in colours(2)  # the retry
        assert error in colours(3)  # failed: disk gone


async def test_search_highlights_and_n_jumps_between_matches(run_store: RunStore) -> None:
    run_id = (await run_store.create_run("many")).id
    for n in range(200):
        await run_store.add_event(run_id, "log", f"needle {n}" if n in (10, 100, 190) else f"hay {n}", "t")
    app = Host(run_store)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        pane.run_id = run_id
        await pane.poll()
        await pilot.press("t", "slash", *"NEEDLE", "enter")
        # following: the newest match, already on screen, is selected and the view stays at the end
        assert pane.follow and pane.visible_lines()[-1] == "t: log: hay 199"
        assert "search “NEEDLE” 3/3" in pane.status_text
        view = pane.query_one(LogLines)
        row = pane.visible_lines().index("t: log: needle 190")
        match = view.get_component_rich_style("log-lines--match").bgcolor
        highlighted = "".join(seg.text for seg in view.render_line(row) if seg.style and seg.style.bgcolor == match)
        assert highlighted == "needle"

        await pilot.press("n")  # wraps to the first match, back in time: follow pauses
        assert "t: log: needle 10" in pane.visible_lines()
        assert not pane.follow and "search “NEEDLE” 1/3" in pane.status_text
        assert "paused" in pane.status_text
        await pilot.press("n")
        assert "t: log: needle 100" in pane.visible_lines() and "2/3" in pane.status_text
        await pilot.press("N")
        assert "t: log: needle 10" in pane.visible_lines() and "1/3" in pane.status_text
        await pilot.press("N")  # wraps back to the newest
        assert "t: log: needle 190" in pane.visible_lines() and "3/3" in pane.status_text

        await pilot.press("slash", "x", "escape")  # Esc in the search box: closes it and clears the search
        assert not pane.has_class("-searching") and isinstance(app.focused, LogLines)
        assert "search" not in pane.status_text
        await pilot.press("slash", *"needle", "enter")
        assert "search “needle”" in pane.status_text
        await pilot.press("escape")  # Esc in the view clears it too
        assert "search" not in pane.status_text
        assert not any(seg.style and seg.style.bgcolor == match for seg in view.render_line(row))


async def test_follow_pause_and_resume(run_store: RunStore) -> None:
    run_id = (await run_store.create_run("long")).id
    for n in range(100):
        await run_store.add_event(run_id, "log", f"line {n}", "t")
    app = Host(run_store, run_id=run_id)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await pane.poll()
        await pilot.press("t")
        assert pane.visible_lines()[-1] == "t: log: line 99"
        await run_store.add_event(run_id, "log", "line 100", "t")
        await pane.poll()
        assert pane.visible_lines()[-1] == "t: log: line 100"

        await pilot.press("f")  # pause: new lines do not move the view
        assert not pane.follow and "paused" in pane.status_text
        before = pane.visible_lines()
        await run_store.add_event(run_id, "log", "line 101", "t")
        await pane.poll()
        await pilot.pause()
        assert pane.visible_lines() == before and pane.line_count == 102

        await pilot.press("G")  # back to the end, following
        assert pane.follow and pane.visible_lines()[-1] == "t: log: line 101"

        await pilot.press("pageup")  # scrolling up by hand pauses
        await pilot.pause()
        assert not pane.follow
        top = pane.visible_lines()
        await run_store.add_event(run_id, "log", "line 102", "t")
        await pane.poll()
        await pilot.pause()
        assert pane.visible_lines() == top

        await pilot.press("end")
        assert pane.follow and pane.visible_lines()[-1] == "t: log: line 102"


async def test_timestamps_toggle(run_store: RunStore) -> None:
    run_id = await seed_failing_run(run_store)
    app = Host(run_store, run_id=run_id)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await pane.poll()
        await pilot.pause()
        expected = await records(run_store, run_id)
        assert pane.visible_lines() == [format_line(r) for r in expected]
        await pilot.press("t")
        assert pane.visible_lines() == [format_line(r, timestamps=False) for r in expected]
        assert "no timestamps" in pane.status_text
        await pilot.press("t")
        assert pane.visible_lines()[0] == format_line(expected[0])


async def test_switching_runs_is_instant_and_backfills_a_runs_history(run_store: RunStore) -> None:
    old = (await run_store.create_run("old")).id
    for n in range(20):
        await run_store.add_event(old, "log", f"old {n}", "t")
    new = (await run_store.create_run("new")).id
    for n in range(5):
        await run_store.add_event(new, "log", f"new {n}", "t")
    app = Host(run_store, backfill=5)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await pane.poll()  # the last 5 lines of the store: all the new run's
        await pilot.press("t")
        assert pane.visible_lines() == [f"[{new}] t: log: new {n}" for n in range(5)]
        pane.run_id = old  # nothing of it buffered yet: its latest lines come from the store
        await wait_until(pilot, lambda: pane.line_count == 5, "the old run's history")
        await pilot.pause()
        assert pane.visible_lines() == [f"t: log: old {n}" for n in range(15, 20)]
        pane.run_id = None  # every run, oldest first
        await pilot.pause()
        assert pane.visible_lines() == [f"[{old}] t: log: old {n}" for n in range(15, 20)] + [
            f"[{new}] t: log: new {n}" for n in range(5)
        ]
        pane.run_id = new  # from the buffer, no query
        await pilot.pause()
        assert pane.visible_lines() == [f"t: log: new {n}" for n in range(5)]


async def test_tens_of_thousands_of_lines_stay_bounded_and_virtual(run_store: RunStore) -> None:
    app = Host(run_store, max_lines=10_000)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await pilot.press("t")
        started = time.perf_counter()
        for batch in range(30):  # 30,000 lines in polls of 1,000; one in ten an error
            pane.add_records(
                LogRecord(n, "r1", "t", "log", f"failed: {n}" if n % 10 == 0 else f"line {n}", 0.0,
                          "error" if n % 10 == 0 else "info")
                for n in range(batch * 1000 + 1, batch * 1000 + 1001)
            )
        await pilot.pause()
        elapsed = time.perf_counter() - started
        view = pane.query_one(LogLines)
        assert pane.buffered_count == 10_000 and pane.line_count == 10_000
        assert view.virtual_size.height == 10_000
        assert pane.filtered_lines()[0] == "[r1] t: log: line 20001"  # the oldest 20,000 are gone
        assert pane.visible_lines()[-2:] == ["[r1] t: log: line 29999", "[r1] t: log: failed: 30000"]
        assert "10,000 of 10,000 lines" in pane.status_text
        await pilot.press("l", "l")  # errors only
        assert pane.line_count == 1_000 and view.virtual_size.height == 1_000
        assert pane.visible_lines()[-1] == "[r1] t: log: failed: 30000"
        assert elapsed < 5, f"adding 30,000 lines took {elapsed:.1f}s"
