"""Workflow runs driven from a long-lived process (the TUI): launch, cancel, resume, retry.

The headless ``smoltui run`` runs one workflow and exits; the TUI runs several at once and keeps
them while the user chats. :class:`RunManager` owns those runs: one :class:`WorkflowRunner` per run,
all sharing one approval gate (so every tool call waits for the user in the run view), one event bus
and one model (LLM tasks take turns on it, first come first served).

Runs are durable in the store; the manager only holds the asyncio tasks of the ones running in
this process. A run whose process died is ``interrupted`` (see :func:`run_state_now`) and can be
resumed like a cancelled or failed one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoltui.backends.base import Backend, GenerationParams
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.run_store import RunRecord, RunStore, new_run_id
from smoltui.orchestrator.scheduler import (
    LLMTaskExecutor,
    Publisher,
    RunResult,
    TaskExecutor,
    ToolTaskExecutor,
    WorkflowRunner,
)
from smoltui.orchestrator.workflow_spec import Workflow, WorkflowError, load_workflow

log = logging.getLogger(__name__)

FINAL_RUN_STATES = frozenset({"succeeded", "failed", "cancelled"})


def run_state_now(record: RunRecord) -> str:
    """The run's state, except that a pending/running run whose process is gone is ``interrupted``."""
    if record.state in ("running", "pending") and record.pid and not pid_alive(record.pid):
        return "interrupted"
    return record.state


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


@dataclass(frozen=True)
class RunFinished:
    """A run this manager drove has ended (or crashed: then ``error`` says why)."""

    run_id: str
    state: str
    error: str | None = None
    kind: str = "run_finished"


BackendProvider = Callable[[], Awaitable[Backend]]


class RunManager:
    def __init__(
        self,
        run_store: RunStore,
        *,
        gate: Any,
        bus: Publisher,
        backend: BackendProvider | None = None,
        params: GenerationParams | None = None,
        concurrency: int | None = None,
        tools: Mapping[str, Any] | None = None,
    ) -> None:
        """
        Args:
            tools: the tools workflows may call, to validate a workflow before it is launched.
            gate: the ApprovalGate every tool task goes through (its bus should be ``bus``).
            backend: awaited the first time a run has LLM tasks; None means runs with LLM tasks
                fail with a clear message.
            concurrency: per-run task limit (default: the workflow's ``max_concurrent_tasks``).
        """
        self.run_store = run_store
        self.gate = gate
        self.bus = bus
        self.backend = backend
        self.params = params or GenerationParams()
        self.concurrency = concurrency
        self.tools = tools
        self.active: dict[str, asyncio.Task[RunResult | None]] = {}
        self._llm_lock = asyncio.Lock()  # one generation at a time across every run

    # -- commands --------------------------------------------------------------------------------

    async def launch(self, file: Path | str, variables: Mapping[str, Any] | None = None) -> str:
        """Start a new run of the workflow in ``file``; returns its id once the run is stored."""
        workflow = await asyncio.to_thread(self._checked, file)
        spec = workflow.spec
        unknown = sorted(set(variables or {}) - set(spec.variables))
        if unknown:
            raise WorkflowError(f"workflow `{spec.id}` has no variable(s) {', '.join(unknown)}")
        spec = spec.model_copy(update={"variables": {**spec.variables, **(variables or {})}})
        run_id = new_run_id()
        path = str(Path(file).resolve())
        created = asyncio.Event()
        self._start(run_id, spec, workflow.base_dir, path, run_kwargs={"variables": spec.variables},
                    created=created)
        await self._wait_created(run_id, created)
        return run_id

    async def resume(self, run_id: str, *, retry: Collection[str] | None = None) -> None:
        """Run an earlier run again: finished tasks keep their results; with ``retry``, only those
        failed tasks (and what depends on them) run again."""
        if run_id in self.active:
            raise SmoltuiError(f"run {run_id} is already running")
        record = await asyncio.to_thread(self.run_store.get_run, run_id)
        state = run_state_now(record)
        if state in ("running", "pending"):
            raise SmoltuiError(f"run {run_id} is running in another smoltui process (pid {record.pid})")
        if state == "succeeded" and retry is None:
            raise SmoltuiError(f"run {run_id} already succeeded; launch the workflow again for a new run")
        if not record.file:
            raise SmoltuiError(f"run {run_id} does not record its workflow file; it cannot be resumed")
        workflow = await asyncio.to_thread(self._checked, record.file)
        spec = workflow.spec.model_copy(update={"variables": {**workflow.spec.variables, **record.variables}})
        created = asyncio.Event()
        self._start(run_id, spec, workflow.base_dir, record.file, run_kwargs={"retry": retry}, created=created)
        await self._wait_created(run_id, created)

    async def retry_task(self, run_id: str, task_id: str) -> None:
        """Run one failed task of a finished run again (its dependents follow if it succeeds)."""
        states = await asyncio.to_thread(self.run_store.task_states, run_id)
        if states.get(task_id) not in ("failed", "cancelled", "upstream_failed"):
            raise SmoltuiError(f"task `{task_id}` of run {run_id} did not fail ({states.get(task_id, 'unknown')}); "
                               "only a failed task can be retried")
        await self.resume(run_id, retry={task_id})

    def _checked(self, file: Path | str) -> Any:
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

    def _start(self, run_id: str, spec: Workflow, base_dir: Path, file: str, *,
               run_kwargs: dict[str, Any], created: asyncio.Event) -> None:
        self.active[run_id] = asyncio.create_task(
            self._drive(run_id, spec, base_dir, file, run_kwargs, created), name=f"run {run_id}")

    async def _wait_created(self, run_id: str, created: asyncio.Event) -> None:
        job = self.active[run_id]
        waiter = asyncio.create_task(created.wait())
        await asyncio.wait({job, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not created.is_set() and job.done() and job.exception() is not None:
            raise job.exception()  # type: ignore[misc]

    async def _drive(self, run_id: str, spec: Workflow, base_dir: Path, file: str,
                     run_kwargs: dict[str, Any], created: asyncio.Event) -> RunResult | None:
        executors: dict[str, TaskExecutor] = {"tool_call": ToolTaskExecutor(self.gate, base_dir.resolve())}
        if any(task.type == "llm_task" for task in spec.tasks):
            executors["llm_task"] = _LazyLLMExecutor(self, self.bus)
        runner = WorkflowRunner(spec, self.run_store, executors, _Notify(self.bus, created),
                                self.concurrency, file=file)
        try:
            result = await runner.run(run_id=run_id, **run_kwargs)
        except asyncio.CancelledError:
            self.bus.publish(RunFinished(run_id, "cancelled"))
            return None
        except Exception as error:  # a store failure or a bug: the run ends, the app does not
            log.exception("run %s crashed", run_id)
            message = str(error) if isinstance(error, SmoltuiError) else f"{type(error).__name__}: {error}"
            self.bus.publish(RunFinished(run_id, "failed", message))
            raise
        finally:
            created.set()
            self.active.pop(run_id, None)
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


class _LazyLLMExecutor:
    """Loads (or waits for) the shared model only when an LLM task actually runs."""

    def __init__(self, manager: RunManager, bus: Publisher) -> None:
        self.manager = manager
        self.bus = bus

    async def execute(self, task: Any, rendered: Any, info: Any) -> dict[str, Any]:
        from smoltui.orchestrator.scheduler import TaskFailed

        if self.manager.backend is None:
            raise TaskFailed("no model is available for LLM tasks")
        try:
            backend = await self.manager.backend()
        except SmoltuiError as error:
            raise TaskFailed(str(error)) from None
        executor = LLMTaskExecutor(backend, self.manager._llm_lock, self.manager.params, self.bus)
        return await executor.execute(task, rendered, info)
