"""Workflow runs of one core: launch, wait, cancel, resume, retry; every front end drives these.

:class:`RunManager` owns the runs this process drives: one :class:`WorkflowRunner` per run, all
sharing the core's approval gate, its bus and its model (LLM tasks take turns on it, first come
first served). The headless ``smoltui run`` launches one run and waits for it; the TUI keeps several
going while the user chats.

Runs are durable in the store; the manager only holds the asyncio tasks of the ones running in
this process. One driver per run: launching or resuming claims the run's lease in the store
(:meth:`RunStore.claim`) before anything runs, renews it every :data:`HEARTBEAT_S` seconds and lets
it go at the end; a resume of a run that another live process drives is refused, naming it. A run
whose driver died is ``interrupted`` (see :func:`run_state_now`) and can be resumed like a cancelled
or failed one: its lease is taken over.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from smoltui.backends.base import GenerationParams
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.events import Publisher, RunFinished
from smoltui.orchestrator.model import Model
from smoltui.orchestrator.run_store import (
    HEARTBEAT_S,
    Lease,
    LeaseLost,
    RunBusy,
    RunStore,
    new_run_id,
    pid_alive,
    run_state_now,
)
from smoltui.orchestrator.scheduler import (
    LLMTaskExecutor,
    RunResult,
    TaskExecutor,
    ToolTaskExecutor,
    WorkflowRunner,
    despite_cancel,
)
from smoltui.orchestrator.states import RunState, TaskState
from smoltui.orchestrator.workflow_spec import Workflow, WorkflowError, coerce_variables, load_workflow

log = logging.getLogger(__name__)


class RunManager:
    def __init__(
        self,
        run_store: RunStore,
        *,
        gate: Any,
        bus: Publisher,
        model: Model | None = None,
        params: GenerationParams | None = None,
        concurrency: int | None = None,
        tools: Mapping[str, Any] | None = None,
    ) -> None:
        """
        Args:
            gate: the ApprovalGate every tool task goes through (its bus should be ``bus``).
            model: the core's model, loaded the first time a run has LLM tasks; None means runs
                with LLM tasks fail with a clear message.
            concurrency: per-run task limit (default: the workflow's ``max_concurrent_tasks``).
            tools: the tools workflows may call, to validate a workflow before it is launched.
        """
        self.run_store = run_store
        self.gate = gate
        self.bus = bus
        self.model = model
        self.params = params or GenerationParams()
        self.concurrency = concurrency
        self.tools = tools
        self.active: dict[str, asyncio.Task[RunResult | None]] = {}
        self.heartbeat_s = HEARTBEAT_S
        self._lost: set[str] = set()  # runs whose lease another process took over while we drove them

    # -- commands --------------------------------------------------------------------------------

    async def launch(self, file: Path | str, variables: Mapping[str, Any] | None = None, *,
                     concurrency: int | None = None, workspace: Path | None = None) -> str:
        """Start a new run of the workflow in ``file``; returns its id once the run is stored.

        ``variables`` are checked against the workflow's (names and types; text is parsed as the
        variable's type) before anything starts. ``workspace``: the folder its tool calls may touch
        (default: the workflow file's folder).
        """
        workflow = await asyncio.to_thread(self._checked, file)
        values = coerce_variables(workflow.spec, variables or {}, launching=True)
        run_id = new_run_id()
        lease = await self.run_store.claim(run_id)
        await self._start(run_id, workflow, str(Path(file).resolve()), variables=values,
                          retry=None, concurrency=concurrency, workspace=workspace, lease=lease)
        return run_id

    async def resume(self, run_id: str, *, retry: Collection[str] | None = None,
                     variables: Mapping[str, Any] | None = None, concurrency: int | None = None,
                     workspace: Path | None = None) -> None:
        """Run an earlier run again: finished tasks keep their results; with ``retry``, only those
        failed tasks (and what depends on them) run again. ``variables`` override the stored ones.

        Refused (:class:`RunBusy`, naming the process) while another process drives the run; of
        two resumes at once, exactly one goes ahead.
        """
        if self.is_running(run_id):
            raise SmoltuiError(f"run {run_id} is already running in this smoltui")
        await self.run_store.get_run(run_id)  # an unknown run is said as such, not claimed
        lease = await self.run_store.claim(run_id)
        try:
            record = await self.run_store.get_run(run_id)  # as it stands now that nobody else drives it
            if RunState(record.state) is RunState.SUCCEEDED and retry is None:
                raise SmoltuiError(f"run {run_id} already succeeded; launch the workflow again for a new run")
            if not record.file:
                raise SmoltuiError(f"run {run_id} does not record its workflow file; it cannot be resumed")
            workflow = await asyncio.to_thread(self._checked, record.file)
            values = coerce_variables(workflow.spec, variables or {})
        except BaseException:
            await _release(self.run_store, lease)
            raise
        await self._start(run_id, workflow, record.file, variables=values, retry=retry,
                          concurrency=concurrency, workspace=workspace, lease=lease)

    async def rerun(self, run_id: str, *, workspace: Path | None = None) -> str:
        """A new run of an earlier run's workflow file with the same variables; returns its id.

        Variables the file no longer declares are left out (the rest are checked as at launch)."""
        record = await self.run_store.get_run(run_id)
        if not record.file:
            raise SmoltuiError(f"run {run_id} does not record its workflow file; it cannot be run again")
        workflow = await asyncio.to_thread(self._checked, record.file)
        declared = workflow.spec.variables
        variables = {name: value for name, value in record.variables.items() if name in declared}
        return await self.launch(record.file, variables, workspace=workspace)

    async def delete(self, run_id: str) -> None:
        """Delete a run and its artifacts (see :meth:`RunStore.delete_run`); refused while it runs."""
        job = self.active.get(run_id)
        if job is not None and not job.done():
            if RunState(run_state_now(await self.run_store.get_run(run_id))).active:
                raise SmoltuiError(f"run {run_id} is running in this smoltui; cancel it first")
            await asyncio.wait({job})  # it has ended and is letting its lease go
        await self.run_store.delete_run(run_id)

    async def check_free(self, run_id: str) -> None:
        """Raise :class:`RunBusy` if another process drives the run now (a cheap early answer for a
        front end about to load a model for it; :meth:`resume` decides for good)."""
        if self.is_running(run_id):
            raise SmoltuiError(f"run {run_id} is already running in this smoltui")
        record = await self.run_store.get_run(run_id)
        if record.lease is not None and record.lease.alive():
            raise RunBusy(run_id, record.lease.owner)
        if record.lease is None and run_state_now(record).active and record.pid and record.pid != os.getpid():
            raise RunBusy(run_id, f"pid {record.pid}")

    async def interrupted(self) -> list[str]:
        """The runs whose driver died before they ended (newest first): resume them to go on."""
        return [record.id for record in await self.run_store.list_runs(active=True)
                if run_state_now(record) is RunState.INTERRUPTED]

    async def retry_task(self, run_id: str, task_id: str) -> None:
        """Run one failed task of a finished run again (its dependents follow if it succeeds)."""
        states = await self.run_store.task_states(run_id)
        state = states.get(task_id)
        if state is None or not TaskState(state).retryable:
            raise SmoltuiError(f"task `{task_id}` of run {run_id} did not fail ({state or 'unknown'}); "
                               "only a failed task can be retried")
        await self.resume(run_id, retry={task_id})

    async def wait(self, run_id: str) -> RunResult | None:
        """The result of a run this process drives (None when it was cancelled)."""
        job = self.active.get(run_id)
        if job is None:
            raise SmoltuiError(f"run {run_id} is not running in this process")
        return await asyncio.shield(job)

    def _checked(self, file: Path | str) -> Workflow:
        if self.tools is not None:
            from smoltui.orchestrator.workflow_validate import check_or_raise

            check_or_raise(file, tools=self.tools)
        return load_workflow(file)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run of this process; False if it is not running here."""
        job = self.active.get(run_id)
        if job is None or job.done():
            return False
        job.cancel()
        return True

    def is_running(self, run_id: str) -> bool:
        job = self.active.get(run_id)
        return job is not None and not job.done()

    async def shutdown(self) -> None:
        """Cancel every run of this process and wait for them to record it (app exit)."""
        jobs = [job for job in self.active.values() if not job.done()]
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)

    # -- the runs --------------------------------------------------------------------------------

    async def _start(self, run_id: str, workflow: Workflow, file: str, *, variables: dict[str, Any],
                     retry: Collection[str] | None, concurrency: int | None, workspace: Path | None,
                     lease: Lease) -> None:
        """Start driving the run (its lease already ours; the job lets it go at the end); return
        once it is in the store (or raise why it could not start)."""
        self.active = {other: job for other, job in self.active.items() if not job.done()}
        created = asyncio.Event()
        job = asyncio.create_task(
            self._drive(run_id, workflow, file, variables, retry, concurrency, workspace, created, lease),
            name=f"run {run_id}")
        self.active[run_id] = job
        waiter = asyncio.create_task(created.wait())
        await asyncio.wait({job, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not created.is_set() and job.done() and not job.cancelled() and job.exception() is not None:
            raise job.exception()  # type: ignore[misc]

    async def _drive(self, run_id: str, workflow: Workflow, file: str, variables: dict[str, Any],
                     retry: Collection[str] | None, concurrency: int | None, workspace: Path | None,
                     created: asyncio.Event, lease: Lease) -> RunResult | None:
        spec = workflow.spec
        folder = (workspace or workflow.base_dir).resolve()
        executors: dict[str, TaskExecutor] = {"tool_call": ToolTaskExecutor(self.gate, folder)}
        if any(task.type == "llm_task" for task in spec.tasks):
            executors["llm_task"] = LLMTaskExecutor(self.model, self.params, self.bus)
        runner = WorkflowRunner(spec, self.run_store, executors, _Notify(self.bus, created),
                                concurrency or self.concurrency, file=file)
        me = asyncio.current_task()
        assert me is not None
        keeper = asyncio.create_task(self._keep(lease, me), name=f"lease of run {run_id}")
        try:
            result = await runner.run(run_id=run_id, variables=variables, retry=retry)
        except (asyncio.CancelledError, LeaseLost) as error:
            if run_id not in self._lost and not isinstance(error, LeaseLost):
                self.bus.publish(RunFinished(run_id, RunState.CANCELLED))
                return None
            # Another process took the run over (we looked dead to it): it is that process's now.
            lost = error if isinstance(error, LeaseLost) else LeaseLost(
                f"run {run_id} was taken over by another process; this process stopped driving it")
            log.warning("%s", lost)
            self.bus.publish(RunFinished(run_id, RunState.INTERRUPTED, str(lost)))
            raise lost from None
        except Exception as error:  # a store failure or a bug: the run ends, the app does not
            log.exception("run %s crashed", run_id)
            message = str(error) if isinstance(error, SmoltuiError) else f"{type(error).__name__}: {error}"
            self.bus.publish(RunFinished(run_id, RunState.FAILED, message))
            raise
        finally:
            keeper.cancel()
            self._lost.discard(run_id)
            created.set()
            await _release(self.run_store, lease)
        self.bus.publish(RunFinished(run_id, result.state))
        return result

    async def _keep(self, lease: Lease, job: asyncio.Task[Any]) -> None:
        """Renew the lease while the run goes on; if it is gone (another process took the run over
        because this one looked dead), stop driving at once: two drivers would run tasks twice."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                ours = await self.run_store.heartbeat(lease)
            except SmoltuiError as error:  # a busy store: the next beat tries again
                log.warning("could not renew the lease of run %s: %s", lease.run_id, error)
                continue
            if not ours:
                self._lost.add(lease.run_id)
                job.cancel()
                return


async def _release(run_store: RunStore, lease: Lease) -> None:
    """Let a lease go although the task doing it is being cancelled, and whatever the store says
    (a lease left behind only costs the next driver the wait until it looks dead)."""
    try:
        await despite_cancel(run_store.release(lease))
    except SmoltuiError as error:
        log.warning("could not let the lease of run %s go: %s", lease.run_id, error)


class _Notify:
    """Passes the runner's events on, and notices the first one (the run is in the store by then)."""

    def __init__(self, bus: Publisher, created: asyncio.Event) -> None:
        self.bus = bus
        self.created = created

    def publish(self, event: Any) -> None:
        self.created.set()
        self.bus.publish(event)


__all__ = ["LeaseLost", "RunBusy", "RunManager", "WorkflowError", "pid_alive", "run_state_now"]
