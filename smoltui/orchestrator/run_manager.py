"""Workflow runs of one core: launch, wait, cancel, resume, retry; every front end drives these.

:class:`RunManager` owns the runs this process drives: one :class:`WorkflowRunner` per run, all
sharing the core's approval gate, its bus and its model (LLM tasks take turns on it, first come
first served). The headless ``smoltui run`` launches one run and waits for it; the TUI keeps several
going while the user chats.

Runs are durable in the store; the manager only holds the asyncio tasks of the ones running in
this process. A run whose process died is ``interrupted`` (see :func:`run_state_now`) and can be
resumed like a cancelled or failed one.
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
from smoltui.orchestrator.run_store import RunRecord, RunStore, new_run_id
from smoltui.orchestrator.scheduler import (
    LLMTaskExecutor,
    RunResult,
    TaskExecutor,
    ToolTaskExecutor,
    WorkflowRunner,
)
from smoltui.orchestrator.states import RunState, TaskState
from smoltui.orchestrator.workflow_spec import Workflow, WorkflowError, check_variables, load_workflow

log = logging.getLogger(__name__)


def run_state_now(record: RunRecord) -> RunState:
    """The run's state, except that a pending/running run whose process is gone is ``interrupted``."""
    state = RunState(record.state)
    if state.active and record.pid and not pid_alive(record.pid):
        return RunState.INTERRUPTED
    return state


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


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

    # -- commands --------------------------------------------------------------------------------

    async def launch(self, file: Path | str, variables: Mapping[str, Any] | None = None, *,
                     concurrency: int | None = None, workspace: Path | None = None) -> str:
        """Start a new run of the workflow in ``file``; returns its id once the run is stored.

        ``workspace``: the folder its tool calls may touch (default: the workflow file's folder).
        """
        workflow = await asyncio.to_thread(self._checked, file)
        check_variables(workflow.spec, variables or {})
        run_id = new_run_id()
        await self._start(run_id, workflow, str(Path(file).resolve()), variables=dict(variables or {}),
                          retry=None, concurrency=concurrency, workspace=workspace)
        return run_id

    async def resume(self, run_id: str, *, retry: Collection[str] | None = None,
                     variables: Mapping[str, Any] | None = None, concurrency: int | None = None,
                     workspace: Path | None = None) -> None:
        """Run an earlier run again: finished tasks keep their results; with ``retry``, only those
        failed tasks (and what depends on them) run again. ``variables`` override the stored ones."""
        if self.is_running(run_id):
            raise SmoltuiError(f"run {run_id} is already running")
        record = await self.run_store.get_run(run_id)
        state = run_state_now(record)
        if state.active:
            raise SmoltuiError(f"run {run_id} is running in another smoltui process (pid {record.pid})")
        if state is RunState.SUCCEEDED and retry is None:
            raise SmoltuiError(f"run {run_id} already succeeded; launch the workflow again for a new run")
        if not record.file:
            raise SmoltuiError(f"run {run_id} does not record its workflow file; it cannot be resumed")
        workflow = await asyncio.to_thread(self._checked, record.file)
        check_variables(workflow.spec, variables or {})
        await self._start(run_id, workflow, record.file, variables=dict(variables or {}), retry=retry,
                          concurrency=concurrency, workspace=workspace)

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
                     retry: Collection[str] | None, concurrency: int | None, workspace: Path | None) -> None:
        """Start driving the run; return once it is in the store (or raise why it could not start)."""
        self.active = {other: job for other, job in self.active.items() if not job.done()}
        created = asyncio.Event()
        job = asyncio.create_task(
            self._drive(run_id, workflow, file, variables, retry, concurrency, workspace, created),
            name=f"run {run_id}")
        self.active[run_id] = job
        waiter = asyncio.create_task(created.wait())
        await asyncio.wait({job, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not created.is_set() and job.done() and not job.cancelled() and job.exception() is not None:
            raise job.exception()  # type: ignore[misc]

    async def _drive(self, run_id: str, workflow: Workflow, file: str, variables: dict[str, Any],
                     retry: Collection[str] | None, concurrency: int | None, workspace: Path | None,
                     created: asyncio.Event) -> RunResult | None:
        spec = workflow.spec
        folder = (workspace or workflow.base_dir).resolve()
        executors: dict[str, TaskExecutor] = {"tool_call": ToolTaskExecutor(self.gate, folder)}
        if any(task.type == "llm_task" for task in spec.tasks):
            executors["llm_task"] = LLMTaskExecutor(self.model, self.params, self.bus)
        runner = WorkflowRunner(spec, self.run_store, executors, _Notify(self.bus, created),
                                concurrency or self.concurrency, file=file)
        try:
            result = await runner.run(run_id=run_id, variables=variables, retry=retry)
        except asyncio.CancelledError:
            self.bus.publish(RunFinished(run_id, RunState.CANCELLED))
            return None
        except Exception as error:  # a store failure or a bug: the run ends, the app does not
            log.exception("run %s crashed", run_id)
            message = str(error) if isinstance(error, SmoltuiError) else f"{type(error).__name__}: {error}"
            self.bus.publish(RunFinished(run_id, RunState.FAILED, message))
            raise
        finally:
            created.set()
        self.bus.publish(RunFinished(run_id, result.state))
        return result


class _Notify:
    """Passes the runner's events on, and notices the first one (the run is in the store by then)."""

    def __init__(self, bus: Publisher, created: asyncio.Event) -> None:
        self.bus = bus
        self.created = created

    def publish(self, event: Any) -> None:
        self.created.set()
        self.bus.publish(event)


__all__ = ["RunManager", "WorkflowError", "pid_alive", "run_state_now"]
