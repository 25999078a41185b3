"""The headless workflow commands: ``run``, ``resume``, ``runs`` and ``logs``.

``run`` and ``resume`` drive the core's run manager (the same one the TUI drives) with the core's
gate, whose policy is the config's rules plus ``--approve``; this module only prints progress.

Exit codes: 0 success, 1 a task failed (or the run could not start: another process drives it),
2 an invalid workflow or a variable of the wrong type, 130 cancelled (Ctrl+C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from smoltui.cli.common import paths_of, settings_of, table, when
from smoltui.cli.remote import require_server, run_with, through_server
from smoltui.core import Core, open_core
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.events import RunStateChanged, TaskLog, TaskStateChanged
from smoltui.orchestrator.run_log import format_line
from smoltui.orchestrator.run_manager import run_state_now
from smoltui.orchestrator.run_store import RunRecord, RunStore
from smoltui.orchestrator.scheduler import RunResult
from smoltui.orchestrator.states import RunState, TaskState
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workflow_spec import (
    Problem,
    WorkflowError,
    coerce_variables,
    load_workflow,
    parse_var_assignments,
)
from smoltui.run_outputs import final_tasks
from smoltui.safe_text import printable
from smoltui.screens.state_icons import STATE_STYLES

TASK_FAILED_EXIT = 1
CANCELLED_EXIT = 130


def run(args: argparse.Namespace) -> int:
    if args.command == "runs":
        return runs_command(args)
    if args.command == "logs":
        return logs_command(args)
    if args.concurrency is not None and args.concurrency < 1:
        raise SmoltuiError("--concurrency must be at least 1")
    workspace = Path(args.workspace).expanduser().resolve() if args.workspace else None
    if getattr(args, "detach", False):  # a run that outlives this command needs a process that outlives it
        client = require_server(args, "--detach")
        return run_with(client, lambda c: _execute_served(args, c, workspace))
    served = through_server(args, lambda client: _execute_served(args, client, workspace))
    if served is not None:
        return served
    return asyncio.run(_execute(args, workspace))


# -- run / resume ----------------------------------------------------------------------------------


async def _execute(args: argparse.Namespace, workspace: Path | None) -> int:
    from smoltui.orchestrator.workflow_validate import validate_workflow

    settings = settings_of(args)
    if args.command == "resume" and not settings.paths.database.exists():
        raise SmoltuiError(f"no workflow run {args.run_id}")
    core = await open_core(settings)
    try:
        record = await core.run_store.get_run(args.run_id) if args.command == "resume" else None
        if record is not None:
            # Said before tools start and a model loads; the resume itself claims the run for good.
            await core.runs.check_free(record.id)
        if record is not None and not record.file:
            raise SmoltuiError(f"run {record.id} does not record its workflow file; it cannot be resumed")
        file = record.file if record is not None else args.file
        for problem in await core.start_tools():
            print(f"smoltui: warning: {problem}", file=sys.stderr)
        problems = validate_workflow(file, tools=core.tools)
        if problems:
            for problem in problems:
                print(problem, file=sys.stderr)
            count = len(problems)
            print(f"{file}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
            return WorkflowError.exit_code
        spec = load_workflow(file).spec
        overrides = parse_var_assignments(spec, args.var or [])
        coerce_variables(spec, overrides, launching=record is None)  # nothing starts without them
        return await _drive(args, core, [task.id for task in spec.tasks], file, record, overrides, workspace)
    finally:
        await core.close()


async def _drive(args: argparse.Namespace, core: Core, task_ids: list[str], file: str, record: RunRecord | None,
                 overrides: dict[str, Any], workspace: Path | None) -> int:
    run_id = record.id if record is not None else None
    if not args.json and sys.stdout.isatty():
        states = await core.run_store.task_states(run_id) if run_id is not None else {}
        printer: _Printer = _LivePrinter(task_ids, run_id=run_id, states=states)
    else:
        printer = _Printer(json_lines=args.json)
    core.bus.subscribe(printer)
    if core.model.available and _has_llm_tasks(file):
        # Loaded before the run starts, so no task's timeout pays for it (a failure fails those tasks).
        printer.note(f"loading model {core.model.label} …")
        await core.model.load()
    if record is not None:
        await core.runs.resume(record.id, variables=overrides, concurrency=args.concurrency, workspace=workspace)
    else:
        run_id = await core.runs.launch(file, overrides, concurrency=args.concurrency, workspace=workspace)
    assert run_id is not None

    final_id = run_id
    _cancel_on_sigint(lambda: core.runs.cancel(final_id), printer)
    printer.start()
    result = await core.runs.wait(run_id)
    # The SIGINT handler stays until the loop closes: a graceful exit may still wait for a tool's
    # worker thread (asyncio.run drains the executor), and a second Ctrl+C must cut that short.
    if result is None:
        printer.close()
        return CANCELLED_EXIT
    printer.finish(result)
    if not args.json:
        from smoltui.cli.show import local_outputs

        records = await core.run_store.task_records(run_id)
        final = [t for t in final_tasks(file, list(result.tasks)) if result.tasks[t] == TaskState.SUCCEEDED]
        printer.outputs(run_id, {t: await local_outputs(core.run_store, run_id, records[t]) for t in final if t in records})
    printer.summary(result)
    return 0 if result.ok else TASK_FAILED_EXIT


# -- run / resume through a server -----------------------------------------------------------------

FOLLOWED_KINDS = ("task_state", "run_state", "task_log", "run_finished", "approval_needed")


async def _execute_served(args: argparse.Namespace, client: Any, workspace: Path | None) -> int:
    """``run`` / ``resume`` on the server: the same checks, lines and exit codes as in-process; the
    run is the server's (closing this terminal never stops it; Ctrl+C cancels it, as in-process)."""
    record = await client.run(args.run_id) if args.command == "resume" else None
    if record is not None and not record["file"]:
        raise SmoltuiError(f"run {record['id']} does not record its workflow file; it cannot be resumed")
    file = record["file"] if record is not None else str(Path(args.file).expanduser().resolve())
    if record is None and not Path(file).is_file():
        raise WorkflowError(f"{args.file}: no such file")
    checked = await client.validate(path=file)
    if checked["problems"]:
        problems = [Problem(**p) for p in checked["problems"]]
        for problem in problems:
            print(problem, file=sys.stderr)
        count = len(problems)
        print(f"{args.file if record is None else file}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return WorkflowError.exit_code
    options = {"assignments": args.var or [], "concurrency": args.concurrency, "workspace": workspace,
               "approve": args.approve}
    if getattr(args, "detach", False):
        print((await client.launch(file, **options))["id"])
        return 0
    task_ids = [task.id for task in load_workflow(file).spec.tasks]
    if not args.json and sys.stdout.isatty():
        states = {t["task_id"]: t["state"] for t in record["tasks"]} if record is not None else {}
        printer: _Printer = _LivePrinter(task_ids, run_id=record["id"] if record else None, states=states)
    else:
        printer = _Printer(json_lines=args.json)
    events: asyncio.Queue[Any] = asyncio.Queue()
    connected = asyncio.Event()

    def on_state(state: str, delay: float) -> None:
        if state == "connected":
            connected.set()
        else:
            printer.note(f"reconnecting to the server in {delay:.1f}s …")

    async def pump() -> None:
        async for event in client.events(kinds=FOLLOWED_KINDS, on_state=on_state):
            events.put_nowait(event)

    follower = asyncio.create_task(pump(), name="follow the run")
    try:
        await connected.wait()  # from now on every event is in the stream: none of the run's is missed
        if record is not None:
            run_id = (await client.resume(record["id"], **options))["id"]
        else:
            run_id = (await client.launch(file, **options))["id"]
        cancelled = _cancel_on_sigint(lambda: asyncio.ensure_future(_cancel_quietly(client, run_id)), printer)
        printer.start()
        await _follow(run_id, events, printer, args.approve is None)
        found = await client.run(run_id)
    finally:
        follower.cancel()
    tasks = {t["task_id"]: t["state"] for t in found["tasks"]}
    errors = {t["task_id"]: t["error"] for t in found["tasks"] if t["state"] == TaskState.FAILED and t["error"]}
    result = RunResult(run_id, found["state"], tasks, errors=errors)
    if cancelled() and found["state"] == RunState.CANCELLED:
        printer.close()
        return CANCELLED_EXIT
    printer.finish(result)
    if not args.json:
        final = [t for t in found["final_tasks"] if tasks.get(t) == TaskState.SUCCEEDED]
        printer.outputs(run_id, {t: (await client.task_outputs(run_id, t))["outputs"] for t in final})
    printer.summary(result)
    return 0 if result.ok else TASK_FAILED_EXIT


async def _follow(run_id: str, events: asyncio.Queue[Any], printer: _Printer, waits_for_people: bool) -> None:
    """Print the run's events until it finishes; name each call that waits for a person."""
    for_us = {RunStateChanged: "run_state", TaskStateChanged: "task_state", TaskLog: "task_log"}
    while True:
        event = await events.get()
        if event.kind == "approval_needed":
            asked = event.data.get("request") or {}
            if asked.get("run_id") == run_id and waits_for_people:
                printer.note(f"[{run_id}] {asked.get('task_id') or 'run'}: {asked.get('tool')} waits for approval "
                             f"(call {asked.get('call_id')}): answer with `smoltui approve {asked.get('call_id')}` "
                             f"or `smoltui deny {asked.get('call_id')}`")
            continue
        if event.data.get("run_id") != run_id:
            continue
        if event.kind == "run_finished":
            return
        for kind_class, kind in for_us.items():
            if event.kind == kind:
                names = {f.name for f in dataclasses.fields(kind_class) if f.name != "kind"}
                printer(kind_class(**{k: v for k, v in event.data.items() if k in names}))


async def _cancel_quietly(client: Any, run_id: str) -> None:
    with contextlib.suppress(SmoltuiError):  # it ended meanwhile: nothing to cancel
        await client.cancel_run(run_id)


def _cancel_on_sigint(cancel: Any, printer: _Printer) -> Any:
    """First Ctrl+C: cancel the run (as in-process); second: quit at once. Returns whether it was pressed."""
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            print("smoltui: cancelling (press Ctrl+C again to quit at once)", file=sys.stderr, flush=True)
            cancel()
        else:
            printer.close()
            sys.stderr.write("smoltui: interrupted\n")
            sys.stderr.flush()
            os._exit(CANCELLED_EXIT)

    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or no signals
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)
    return lambda: interrupts > 0


def _has_llm_tasks(file: str) -> bool:
    return any(task.type == "llm_task" for task in load_workflow(file).spec.tasks)


class _Printer:
    """Progress lines (plain or JSON) from the run's events (the scheduler has already stored them)."""

    def __init__(self, *, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.reader_gone = False
        """stdout was closed by its reader (``smoltui run ... | head -1``): the progress is no
        longer written, the run goes on to its end (it is the work; the lines only show it)."""

    def __call__(self, event: Any) -> None:
        if isinstance(event, TaskStateChanged):
            message = event.state + (f" ({event.error})" if event.error and event.state != TaskState.CANCELLED else "")
            self._emit({"event": "task_state", "run_id": event.run_id, "task_id": event.task_id,
                        "state": event.state, "attempt": event.attempt, "error": event.error},
                       f"[{event.run_id}] {event.task_id}: {message}")
        elif isinstance(event, RunStateChanged):
            self._emit({"event": "run_state", "run_id": event.run_id, "state": event.state},
                       f"[{event.run_id}] run: {event.state}")
        elif isinstance(event, TaskLog):
            self._emit({"event": "log", "run_id": event.run_id, "task_id": event.task_id,
                        "message": event.message},
                       f"[{event.run_id}] {event.task_id or 'run'}: {event.message}")

    def _emit(self, payload: dict[str, Any], line: str) -> None:
        self._print(json.dumps(payload, ensure_ascii=False, default=str) if self.json_lines else line)

    def _print(self, line: str) -> None:
        if self.reader_gone:
            return
        try:
            print(printable(line, multiline=True), flush=True)
        except BrokenPipeError:
            from smoltui.cli import discard_stdout

            self.reader_gone = True
            discard_stdout()

    def note(self, message: str) -> None:
        print(f"smoltui: {message}", file=sys.stderr, flush=True)

    def start(self) -> None:
        """Begin showing progress (the plain printer needs nothing)."""

    def finish(self, result: Any) -> None:
        """The run is over: show its final state (before :meth:`summary`)."""

    def close(self) -> None:
        """Stop showing progress (idempotent)."""

    def outputs(self, run_id: str, outputs: dict[str, Any]) -> None:
        """The final tasks' outputs, short (``smoltui show`` prints them whole)."""
        if self.reader_gone or self.json_lines:
            return
        from smoltui.cli.show import final_outputs

        try:
            final_outputs(run_id, outputs)
        except BrokenPipeError:
            from smoltui.cli import discard_stdout

            self.reader_gone = True
            discard_stdout()

    def summary(self, result: Any) -> None:
        if self.json_lines:
            self._emit({"event": "result", "run_id": result.run_id, "state": result.state,
                        "tasks": result.tasks, "errors": result.errors}, "")
            return
        for task_id, error in result.errors.items():
            print(printable(f"[{result.run_id}] {task_id} failed: {error}", multiline=True), file=sys.stderr)
        counts: dict[str, int] = {}
        for state in result.tasks.values():
            counts[state] = counts.get(state, 0) + 1
        detail = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        self._print(f"run {result.run_id} {result.state} ({detail})")


_STATE_STYLES = STATE_STYLES


class _TaskRow:
    __slots__ = ("attempt", "ended", "error", "started", "state")

    def __init__(self, state: str = TaskState.PENDING) -> None:
        self.state = state
        self.attempt = 0
        self.error: str | None = None
        self.started: float | None = None
        self.ended: float | None = None


class _LivePrinter(_Printer):
    """A live table of the run's tasks (``rich.live.Live``), for a terminal without ``--json``."""

    def __init__(self, task_ids: list[str], *, run_id: str | None = None, states: dict[str, str] | None = None) -> None:
        super().__init__(json_lines=False)
        self.run_id = run_id
        self.run_state: str = RunState.PENDING
        self.started = time.monotonic()
        self.ended: float | None = None
        self.lock = threading.Lock()
        self.rows: dict[str, _TaskRow] = {task_id: _TaskRow() for task_id in task_ids}
        for task_id, state in (states or {}).items():  # a resumed run: its finished tasks keep their states
            self.rows.setdefault(task_id, _TaskRow()).state = state
        self.live: Any = None
        self.width = 80

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if isinstance(event, TaskStateChanged):
                self.run_id = self.run_id or event.run_id
                row = self.rows.setdefault(event.task_id, _TaskRow())
                row.state = event.state
                row.attempt = event.attempt or row.attempt
                if event.error and event.state != TaskState.CANCELLED:
                    row.error = event.error
                if event.state == TaskState.RUNNING:
                    row.started, row.ended = now, None
                elif TaskState(event.state).finished and row.started is not None and row.ended is None:
                    row.ended = now
            elif isinstance(event, RunStateChanged):
                self.run_id = event.run_id
                self.run_state = event.state
                if RunState(event.state).finished:
                    self.ended = now
        # the Live thread redraws from these rows about four times a second

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        with self.lock:
            rows = [(task_id, row.state, row.attempt, row.error, row.started, row.ended)
                    for task_id, row in self.rows.items()]
            run_id, run_state, ended = self.run_id, self.run_state, self.ended
        done = sum(1 for _, state, *_ in rows if TaskState(state).done)
        elapsed = (ended or now) - self.started
        header = Text.assemble(
            ("run ", "bold"), (run_id or "(starting)", "bold"), "  ",
            (run_state, _STATE_STYLES.get(run_state, ("", ""))[1]),
            f"  {done}/{len(rows)} done  {elapsed:.1f}s",
        )
        cells = []
        for task_id, state, attempt, error, started, task_ended in rows:
            symbol, style = _STATE_STYLES.get(state, ("?", ""))
            seconds = "" if started is None else f"{(task_ended or now) - started:.1f}s"
            lines = (error or "").strip().splitlines()
            cells.append((task_id, Text(f"{symbol} {state}", style=style), str(attempt),
                          seconds, Text(lines[0] if lines else "", style="red")))
        used = 1
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for index, (name, justify) in enumerate((("TASK", "left"), ("STATE", "left"), ("TRY", "right"),
                                                 ("TIME", "right"))):  # never squeezed: the error is
            width = max([len(name)] + [len(str(cell[index])) for cell in cells])
            table.add_column(name, justify=justify, no_wrap=True, min_width=width, max_width=width)
            used += width + 2
        table.add_column("ERROR", no_wrap=True, overflow="ellipsis", max_width=max(8, self.width - used))
        for row_cells in cells:
            table.add_row(*row_cells)
        return Group(header, table)

    def start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=sys.stdout)
        self.width = console.width
        self.live = Live(get_renderable=self.render, console=console, refresh_per_second=4,
                         transient=False, redirect_stdout=False, redirect_stderr=True)
        self.live.start()

    def finish(self, result: Any) -> None:
        now = time.monotonic()
        with self.lock:
            self.run_id, self.run_state = result.run_id, result.state
            self.ended = self.ended or now
            for task_id, state in result.tasks.items():
                row = self.rows.setdefault(task_id, _TaskRow())
                row.state = state
                if task_id in result.errors:
                    row.error = result.errors[task_id]
                if row.started is not None and row.ended is None:
                    row.ended = now
        self.close()

    def close(self) -> None:
        live, self.live = self.live, None
        if live is not None:
            live.refresh()
            live.stop()


# -- runs / logs -----------------------------------------------------------------------------------


async def _run_row(run_store: RunStore, record: RunRecord) -> dict[str, Any]:
    states = await run_store.task_states(record.id)
    state = run_state_now(record)  # "interrupted" when its process died (SIGKILL, crash): resume it
    return {
        "id": record.id, "workflow": record.workflow_id, "name": record.name, "file": record.file,
        "state": state, "created_at": record.created_at, "updated_at": record.updated_at,
        "tasks_done": sum(1 for s in states.values() if TaskState(s).done),
        "tasks_total": len(states), "task_states": states,
    }


def runs_command(args: argparse.Namespace) -> int:
    if getattr(args, "delete", None) or getattr(args, "prune", None) is not None:
        return delete_runs_command(args)
    served = through_server(args, lambda client: _runs_served(args, client))
    if served is not None:
        return served
    paths = paths_of(args)

    async def rows_of() -> list[dict[str, Any]]:
        async with await Store.open(paths.database) as store:
            run_store = RunStore(store)
            return [await _run_row(run_store, record) for record in await run_store.list_runs(limit=args.limit)]

    rows = asyncio.run(rows_of()) if paths.database.exists() else []  # never create a database to say so
    return _print_runs(args, rows)


async def _runs_served(args: argparse.Namespace, client: Any) -> int:
    rows = []
    for run in await client.runs(limit=args.limit):
        states = run.get("task_states") or {}
        rows.append({"id": run["id"], "workflow": run["workflow_id"], "name": run["name"], "file": run["file"],
                     "state": run["state"], "created_at": run["created_at"], "updated_at": run["updated_at"],
                     "tasks_done": sum(1 for s in states.values() if TaskState(s).done),
                     "tasks_total": len(states), "task_states": states})
    return _print_runs(args, rows)


def _print_runs(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no workflow runs")
        return 0
    lines = [(r["id"], r["workflow"], r["state"], when(r["created_at"]), f"{r['tasks_done']}/{r['tasks_total']}")
             for r in rows]
    print(table(("RUN", "WORKFLOW", "STATE", "CREATED", "TASKS"), lines))
    return 0


def delete_runs_command(args: argparse.Namespace) -> int:
    """``runs --delete RUN_ID…`` and ``runs --prune DAYS``: delete runs with their artifacts.

    A run that a live process drives is refused (one line naming it; the others still go), as is
    an unknown id. Exit 0 when everything asked for was deleted, 1 otherwise.
    """
    paths = paths_of(args)
    ids: list[str] = list(getattr(args, "delete", None) or [])
    days = getattr(args, "prune", None)
    if days is not None and (not isinstance(days, int | float) or days < 0):
        raise SmoltuiError(f"--prune takes a number of days (0 or more), not {days!r}")
    if not paths.database.exists():  # never create a database to delete nothing from it
        if ids:
            raise SmoltuiError(f"no workflow run {ids[0]}")
        print("smoltui: no runs to prune")
        return 0

    async def delete() -> tuple[list[str], list[str]]:
        deleted: list[str] = []
        refused: list[str] = []
        async with await Store.open(paths.database) as store:
            run_store = RunStore(store)
            for run_id in ids:
                try:
                    await run_store.delete_run(run_id)
                except SmoltuiError as error:
                    print(f"smoltui: {error}", file=sys.stderr)
                    refused.append(run_id)
                else:
                    deleted.append(run_id)
            if days is not None:
                pruned, busy = await run_store.prune_runs(days * 86400)
                deleted += pruned
                for run_id in busy:
                    print(f"smoltui: kept run {run_id}: a live process drives it", file=sys.stderr)
                refused += busy
        return deleted, refused

    deleted, refused = asyncio.run(delete())
    if getattr(args, "json", False):
        print(json.dumps({"deleted": deleted, "refused": refused}, indent=2))
    else:
        for run_id in deleted:
            print(f"deleted run {run_id}")
        if not deleted and not refused:
            print("no runs to delete")
    return 0 if not refused else 1


def logs_command(args: argparse.Namespace) -> int:
    try:
        served = through_server(args, lambda client: _logs_served(args, client))
    except KeyboardInterrupt:
        return CANCELLED_EXIT
    if served is not None:
        return served
    paths = paths_of(args)
    if not paths.database.exists():
        raise SmoltuiError(f"no workflow run {args.run_id}")
    try:
        return asyncio.run(_logs(args, paths.database))
    except KeyboardInterrupt:
        return CANCELLED_EXIT


async def _logs(args: argparse.Namespace, database: Path) -> int:
    async with await Store.open(database) as store:
        run_store = RunStore(store)
        record = await run_store.get_run(args.run_id)
        last = 0
        while True:
            for event in await run_store.events(record.id, last):
                last = event.id
                _print_event(event, args.json)
            current = await run_store.get_run(record.id)
            if not args.follow:
                break
            if run_state_now(current).finished:
                for event in await run_store.events(record.id, last):  # anything written meanwhile
                    last = event.id
                    _print_event(event, args.json)
                break
            await asyncio.sleep(args.interval)
        if run_state_now(current) is RunState.INTERRUPTED:
            # Nothing will be written to this log until someone resumes the run: say so, not wait.
            print(f"smoltui: {interrupted_note(current)}", file=sys.stderr, flush=True)
    return 0


async def _logs_served(args: argparse.Namespace, client: Any) -> int:
    """``logs`` through the server; ``--follow`` follows the live events (and says when it
    reconnects), reading the log lines after the last one printed each time something happens."""
    from smoltui.orchestrator.run_store import RunEventRecord

    found = await client.run(args.run_id)
    run_id = found["id"]
    last = 0

    async def more() -> None:
        nonlocal last
        for row in await client.logs(run_id, after=last):
            last = row["id"]
            _print_event(RunEventRecord(**{k: row[k] for k in ("id", "run_id", "task_id", "kind", "message",
                                                               "created_at")}), args.json)

    if args.follow and not RunState(found["state"]).finished:
        connected = asyncio.Event()
        reconnected: list[bool] = []

        def on_state(state: str, delay: float) -> None:
            if state == "connected":
                connected.set()
            else:
                reconnected.append(True)
                print(f"smoltui: reconnecting to the server in {delay:.1f}s …", file=sys.stderr, flush=True)

        stream = client.events(run_id=run_id, kinds=FOLLOWED_KINDS, on_state=on_state)
        first = asyncio.ensure_future(anext(stream))
        try:
            await asyncio.wait([first, asyncio.ensure_future(connected.wait())], return_when=asyncio.FIRST_COMPLETED)
            await more()  # everything up to now; what follows comes as events
            found = await client.run(run_id)
            pending: asyncio.Future[Any] | None = first
            while not RunState(found["state"]).finished:
                event = await pending if pending is not None else await anext(stream)
                pending = None
                await more()
                if event.kind in ("run_finished", "gap") or (event.kind == "run_state" and
                                                           RunState(event.data.get("state", "pending")).finished):
                    found = await client.run(run_id)
        finally:
            first.cancel()
            await stream.aclose()
    await more()
    if found["state"] == RunState.INTERRUPTED:
        driver = f"pid {found['pid']}" if found.get("pid") else "its process"
        print(f"smoltui: run {run_id} was interrupted: {driver} stopped driving it (killed or crashed); "
              f"resume it with `smoltui resume {run_id}`", file=sys.stderr, flush=True)
    return 0


def interrupted_note(record: RunRecord) -> str:
    """One line for an interrupted run: who stopped driving it, and how to go on."""
    driver = record.lease.owner if record.lease is not None else f"pid {record.pid}" if record.pid else "its process"
    return (f"run {record.id} was interrupted: {driver} stopped driving it (killed or crashed); "
            f"resume it with `smoltui resume {record.id}`")


def _print_event(event: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"id": event.id, "run_id": event.run_id, "task_id": event.task_id, "kind": event.kind,
                          "message": event.message, "created_at": event.created_at}, ensure_ascii=False),
              flush=True)
        return
    print(format_line(event), flush=True)  # the TUI log pane shows the same line


__all__ = ["delete_runs_command", "interrupted_note", "logs_command", "run", "runs_command"]
