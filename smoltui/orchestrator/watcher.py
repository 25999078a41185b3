"""The one watcher of a core: what other processes change reaches the bus from here.

Runs driven by this process announce themselves (the scheduler publishes every change). A run driven
from another terminal, a ``smoltui logs`` elsewhere, a run whose process was killed, or a workflow
file edited in an editor change nothing in this process: the watcher notices them, once a second,
and publishes :class:`RunsChanged` or :class:`WorkflowsChanged`. Views subscribe to the bus and
read again; none of them polls on its own.

What it checks is cheap: ``PRAGMA data_version`` (changes only when another connection committed;
then the run rows and log lines written since), the lease of each run another process drives
(its owner's pid still there, its heartbeat fresh: a driver killed with SIGKILL, or hung, stops
renewing it), and a few ``stat`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from smoltui.errors import SmoltuiError
from smoltui.orchestrator.events import Publisher, RunsChanged, WorkflowsChanged
from smoltui.orchestrator.run_store import HOST, RunStore, run_state_now
from smoltui.orchestrator.states import RunState
from smoltui.orchestrator.workflow_catalog import WorkflowCatalog

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


class Watcher:
    def __init__(self, run_store: RunStore, catalog: WorkflowCatalog, bus: Publisher, *,
                 interval_s: float = INTERVAL_S) -> None:
        self.run_store = run_store
        self.catalog = catalog
        self.bus = bus
        self.interval_s = interval_s
        self._version: int | None = None
        self._since = time.time()
        self._last_line = 0  # the highest run_events id seen (ids are one global sequence)
        self._files: tuple[Any, ...] | None = None
        self._foreign_active: set[str] = set()  # ids of the active runs another process drives
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Check once a second until :meth:`stop` (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="smoltui watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except SmoltuiError as error:  # a busy or closing store: try again next time
                log.info("watcher: %s", error)
            except Exception:  # never let the watcher die of one bad check
                log.exception("watcher check failed")
            await asyncio.sleep(self.interval_s)

    async def check(self) -> None:
        """Publish what changed since the last check (the first check only takes a baseline)."""
        changed = await self._changed_runs()
        changed |= await self._died()
        if changed:
            self.bus.publish(RunsChanged(tuple(sorted(changed))))
        files = await asyncio.to_thread(self.catalog.files_stamp)
        if self._files is not None and files != self._files:
            self.bus.publish(WorkflowsChanged())
        self._files = files

    async def _changed_runs(self) -> set[str]:
        version = await self.run_store.store.data_version()
        first = self._version is None
        if version == self._version:
            return set()
        self._version = version
        # A little slack: another process's clock reading and its commit are not one instant.
        since, self._since = self._since, time.time() - 1.0
        fetch = self.run_store.store.fetch
        # Who drives each run: its lease's owner, or (a run that took no lease) the pid it stores.
        columns = "r.id, r.state, COALESCE(l.pid, r.pid), COALESCE(l.host, ?)"
        joined = "FROM runs r LEFT JOIN run_leases l ON l.run_id = r.id"
        if first:  # the baseline: which runs other processes are driving now
            rows = await fetch(f"SELECT {columns} {joined} WHERE r.state IN ('pending', 'running')", (HOST,))
            self._last_line = (await fetch("SELECT COALESCE(MAX(id), 0) FROM run_events"))[0][0]
            logged: set[str] = set()
        else:
            rows = await fetch(f"SELECT {columns} {joined} WHERE r.updated_at >= ?", (HOST, since))
            # A log line alone (a retry, a condition) changes no run row, but its run changed.
            lines = await fetch("SELECT run_id, MAX(id) FROM run_events WHERE id > ? GROUP BY run_id",
                                (self._last_line,))
            logged = {run_id for run_id, _ in lines}
            self._last_line = max([self._last_line, *(last for _, last in lines)])
        me = os.getpid()
        for run_id, state, pid, host in rows:
            if RunState(state).active and pid and (pid != me or host != HOST):
                self._foreign_active.add(run_id)
            else:
                self._foreign_active.discard(run_id)
        return set() if first else {row[0] for row in rows} | logged

    async def _died(self) -> set[str]:
        """Runs another process was driving when it died or hung: nothing in the file says so,
        except that its lease is no longer renewed."""
        dead: set[str] = set()
        for run_id in list(self._foreign_active):
            record = await self.run_store.find_run(run_id)
            if record is None or not RunState(record.state).active:
                self._foreign_active.discard(run_id)  # ended (the change itself was announced)
            elif run_state_now(record) is RunState.INTERRUPTED:
                self._foreign_active.discard(run_id)
                dead.add(run_id)
        return dead
