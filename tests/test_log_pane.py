"""The live log pane in a tiny host app, over a real SQLite store (driven with Pilot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from smoltui.orchestrator.run_log import LogRecord, format_line
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.store import Store
from smoltui.screens.log_pane import LogLines, LogPane

SIZE = (100, 20)


class Host(App[None]):
    def __init__(self, run_store: RunStore, **options: object) -> None:
        super().__init__()
        self.run_store = run_store
        self.options = options

    def compose(self) -> ComposeResult:
        yield LogPane(self.run_store, id="logs", **self.options)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.query_one(LogPane).focus()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "smoltui.db"


@pytest.fixture
def run_store(db: Path) -> Iterator[RunStore]:
    store = Store.open(db)
    try:
        yield RunStore(store)
    finally:
        store.close()


async def wait_until(pilot: Pilot, predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)


def records(run_store: RunStore, run_id: str) -> list[LogRecord]:
    return [LogRecord.from_event(event) for event in run_store.events(run_id)]


def pane_of(pilot: Pilot) -> LogPane:
    return pilot.app.query_one(LogPane)


def seed_failing_run(run_store: RunStore) -> str:
    run_id = run_store.create_run("demo", task_ids=["read", "save"]).id
    run_store.add_event(run_id, "run_state", "running")
    run_store.add_event(run_id, "task_state", "running", "read")
    run_store.add_event(run_id, "log", "attempt 1/2 failed: disk busy; retrying in 1s", "read")
    run_store.add_event(run_id, "log", "failed: disk gone", "read")
    run_store.add_event(run_id, "task_state", "failed", "read")
    run_store.add_event(run_id, "task_state", "upstream_failed", "save")
    run_store.add_event(run_id, "run_state", "failed")
    return run_id


async def test_a_runs_lines_appear_as_smoltui_logs_prints_them(run_store: RunStore) -> None:
    run_id = seed_failing_run(run_store)
    app = Host(run_store, poll_interval=0)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await pane.poll()
        await pilot.pause()
        expected = [format_line(r, show_run=True) for r in records(run_store, run_id)]
        assert pane.visible_lines() == expected
        assert pane.status_text == "all runs · level: all · following · 7 of 7 lines"
        screen = app.export_screenshot().replace("&#160;", " ")
        assert "all runs · level: all · following · 7 of 7 lines" in screen  # the header line
        pane.run_id = run_id  # one run: no run column, the exact `smoltui logs` line
        await pane.poll()
        await pilot.pause()
        assert pane.visible_lines() == [format_line(r) for r in records(run_store, run_id)]
        assert pane.status_text.startswith(f"run {run_id} · ")


async def test_lines_written_by_another_connection_appear_while_following(run_store: RunStore, db: Path) -> None:
    app = Host(run_store, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await wait_until(pilot, lambda: "0 of 0 lines" in pane.status_text, "the first poll")
        with Store.open(db) as other:  # what `smoltui run` in another terminal does
            writer = RunStore(other)
            run_id = writer.create_run("elsewhere").id
            for n in range(40):
                writer.add_event(run_id, "log", f"step {n}", "work")
        await wait_until(pilot, lambda: pane.line_count == 40
                         and pane.visible_lines()[-1:] == pane.filtered_lines()[-1:], "the other process's lines")
        assert pane.visible_lines()[-1].endswith(f"[{run_id}] work: log: step 39")  # followed to the end
        assert len(pane.visible_lines()) == pane.query_one(LogLines).scrollable_content_region.height


async def test_level_filter_cycles_and_colours_by_level(run_store: RunStore) -> None:
    run_id = seed_failing_run(run_store)
    app = Host(run_store, poll_interval=0)
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
        error = view._style("log-lines--error").color
        warning = view._style("log-lines--warning").color
        assert error is not None and warning is not None and error != warning

        def colours(y: int) -> set[object]:
            return {seg.style.color for seg in view.render_line(y) if seg.text.strip() and seg.style}

        assert error not in colours(0) and warning not in colours(0)  # run: running
        assert warning in colours(2)  # the retry
        assert error in colours(3)  # failed: disk gone


async def test_search_highlights_and_n_jumps_between_matches(run_store: RunStore) -> None:
    run_id = run_store.create_run("many").id
    for n in range(200):
        run_store.add_event(run_id, "log", f"needle {n}" if n in (10, 100, 190) else f"hay {n}", "t")
    app = Host(run_store, poll_interval=0)
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
        match = view._style("log-lines--match").bgcolor
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
    run_id = run_store.create_run("long").id
    for n in range(100):
        run_store.add_event(run_id, "log", f"line {n}", "t")
    app = Host(run_store, poll_interval=0, run_id=run_id)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await pane.poll()
        await pilot.press("t")
        assert pane.visible_lines()[-1] == "t: log: line 99"
        run_store.add_event(run_id, "log", "line 100", "t")
        await pane.poll()
        assert pane.visible_lines()[-1] == "t: log: line 100"

        await pilot.press("f")  # pause: new lines do not move the view
        assert not pane.follow and "paused" in pane.status_text
        before = pane.visible_lines()
        run_store.add_event(run_id, "log", "line 101", "t")
        await pane.poll()
        await pilot.pause()
        assert pane.visible_lines() == before and pane.line_count == 102

        await pilot.press("G")  # back to the end, following
        assert pane.follow and pane.visible_lines()[-1] == "t: log: line 101"

        await pilot.press("pageup")  # scrolling up by hand pauses
        await pilot.pause()
        assert not pane.follow
        top = pane.visible_lines()
        run_store.add_event(run_id, "log", "line 102", "t")
        await pane.poll()
        await pilot.pause()
        assert pane.visible_lines() == top

        await pilot.press("end")
        assert pane.follow and pane.visible_lines()[-1] == "t: log: line 102"


async def test_timestamps_toggle(run_store: RunStore) -> None:
    run_id = seed_failing_run(run_store)
    app = Host(run_store, poll_interval=0, run_id=run_id)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(pilot)
        await pane.poll()
        await pilot.pause()
        expected = records(run_store, run_id)
        assert pane.visible_lines() == [format_line(r) for r in expected]
        await pilot.press("t")
        assert pane.visible_lines() == [format_line(r, timestamps=False) for r in expected]
        assert "no timestamps" in pane.status_text
        await pilot.press("t")
        assert pane.visible_lines()[0] == format_line(expected[0])


async def test_switching_runs_is_instant_and_backfills_a_runs_history(run_store: RunStore) -> None:
    old = run_store.create_run("old").id
    for n in range(20):
        run_store.add_event(old, "log", f"old {n}", "t")
    new = run_store.create_run("new").id
    for n in range(5):
        run_store.add_event(new, "log", f"new {n}", "t")
    app = Host(run_store, poll_interval=0, backfill=5)
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
    app = Host(run_store, poll_interval=0, max_lines=10_000)
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
