"""The DAG scheduler: runs a workflow's tasks in dependency order, concurrently, durably.

The algorithm, as written below: ``graphlib.TopologicalSorter`` hands out the tasks whose
dependencies are done; each is either settled on the spot (already finished in an earlier attempt of
this run, upstream failed, skipped, a ``conditional``) or started as one coroutine; an
``asyncio.Semaphore`` caps how many run at once; retries and timeouts wrap the coroutine. Every state
change and output is written to the :class:`RunStore` *before* its event is published.

Template context: the workflow's variables plus every output (by name) of the tasks finished so far.
On resume, tasks already ``succeeded`` or ``skipped`` in the store are not run again; their outputs
are loaded back (artifacts included).

Task states: a failing task marks every transitive dependent ``upstream_failed`` while independent
branches go on; a task whose ``when`` renders falsy is ``skipped``; a ``conditional`` skips the tasks
of the branch it did not choose; dependents of a skipped task are skipped (``upstream_failed`` wins
over skipped when both apply).
"""

from __future__ import annotations

import asyncio
import contextlib
import graphlib
import importlib.util
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    TextDelta,
    ThinkingDelta,
)
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.events import (
    Publisher,
    RunEvent,
    RunStateChanged,
    TaskLog,
    TaskStateChanged,
    TaskToken,
)
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.states import RunState, TaskState
from smoltui.orchestrator.templating import TemplateError, render_structure
from smoltui.orchestrator.workflow_spec import Task, Workflow

# -- executors -------------------------------------------------------------------------------------


class TaskFailed(SmoltuiError):
    """A task failed for a reason worth one line (no traceback): bad output, tool error, template."""


@dataclass(frozen=True)
class RenderedTask:
    """A task's string fields with ``${...}`` evaluated (None where the task has no such field)."""

    inputs: dict[str, Any]
    prompt: Any = None
    system: Any = None


@dataclass(frozen=True)
class TaskInfo:
    run_id: str
    task_id: str
    attempt: int
    artifacts_dir: Path
    paused: Callable[[], AbstractAsyncContextManager[None]] | None = None
    """Wrap a wait that must not count against the task's timeout (a user reading an approval)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """What an executor measured of this attempt (an LLM task's tokens, tok/s, seconds); the
    runner stores it with the task, succeeded or not."""


class _Deadline:
    """The task timeout, as a deadline that :meth:`paused` stops for as long as it is inside."""

    def __init__(self) -> None:
        self.timeout: asyncio.Timeout | None = None

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        timeout = self.timeout
        when = timeout.when() if timeout is not None and not timeout.expired() else None
        if timeout is None or when is None:
            yield
            return
        remaining = when - loop.time()
        timeout.reschedule(None)  # stopped while the user decides
        try:
            yield
        finally:
            if not timeout.expired():
                timeout.reschedule(loop.time() + max(0.0, remaining))


class TaskExecutor(Protocol):
    async def execute(self, task: Task, rendered: RenderedTask, info: TaskInfo) -> dict[str, Any]:
        """Run one attempt; return outputs by name. Raise to fail the attempt."""
        ...


def name_outputs(task: Task, value: Any) -> dict[str, Any]:
    """Map one result onto the task's declared ``outputs``.

    One name gets the whole value; several names take the same keys of a dict value; a task that
    declares no outputs keeps nothing.
    """
    names = list(task.outputs)
    if not names:
        return {}
    if len(names) == 1:
        return {names[0]: value}
    if not isinstance(value, Mapping):
        raise TaskFailed(f"task `{task.id}` declares outputs {names} but produced a {type(value).__name__}, not a mapping")
    missing = [n for n in names if n not in value]
    if missing:
        raise TaskFailed(f"task `{task.id}` did not produce output(s) {missing}")
    return {n: value[n] for n in names}


class ToolTaskExecutor:
    """``tool_call`` tasks: the rendered inputs become the arguments of a call through the gate."""

    def __init__(self, gate: Any, workspace: Path, artifacts_dir: Path | None = None) -> None:
        self.gate = gate  # ApprovalGate (typed loosely: the scheduler does not import the tools layer)
        self.workspace = Path(workspace)
        self.artifacts_dir = artifacts_dir

    async def execute(self, task: Task, rendered: RenderedTask, info: TaskInfo) -> dict[str, Any]:
        from smoltui.orchestrator.approval import ToolCall
        from smoltui.tools.base import ToolContext

        artifacts_dir = self.artifacts_dir or info.artifacts_dir
        ctx = ToolContext(workspace=self.workspace, artifacts_dir=artifacts_dir,
                          run_id=info.run_id, task_id=task.id)
        arguments = _tables_to_artifacts(rendered.inputs, ctx)
        call = ToolCall.new(task.tool or "", arguments, run_id=info.run_id, task_id=task.id)
        result = await self.gate.run(call, ctx, while_asking=info.paused)
        if not result.ok:
            kind = "" if result.error_kind == "failed" else f" ({result.error_kind})"
            detail = (result.error or "").removeprefix(f"{task.tool}: ")  # the tool names itself; so does this line
            raise TaskFailed(f"tool `{task.tool}` failed{kind}: {detail}")
        return name_outputs(task, _tool_output(result))


def _tool_output(result: Any) -> Any:
    """What a tool call hands to later tasks: a table as a DataFrame (so templates like
    ``${dataframe.describe()}`` work), another artifact as its path, else the JSON content."""
    if not result.artifacts:
        return result.content
    artifact = result.artifacts[0]
    if artifact.kind == "dataframe" and importlib.util.find_spec("pandas"):
        import pandas as pd

        return pd.read_parquet(artifact.path)
    return Path(artifact.path)


def _tables_to_artifacts(value: Any, ctx: Any) -> Any:
    """DataFrames in tool arguments become table artifact ids: tools take ids, workflows hold tables."""
    kind = type(value)
    if kind.__name__ == "DataFrame" and kind.__module__.startswith("pandas"):
        from smoltui.tools.data import save_frame

        return save_frame(value, ctx, "table from an earlier task").content["artifact"]
    if isinstance(value, dict):
        return {key: _tables_to_artifacts(item, ctx) for key, item in value.items()}
    if isinstance(value, list):
        return [_tables_to_artifacts(item, ctx) for item in value]
    return value


class LLMTaskExecutor:
    """``llm_task`` tasks: one generation on the core's model, waiting its turn behind chats, other
    tasks and the planner (first come, first served)."""

    def __init__(self, model: Any, params: GenerationParams | None = None, bus: Publisher | None = None) -> None:
        self.model = model  # orchestrator.model.Model (or None: no model, so LLM tasks fail clearly)
        self.params = params or GenerationParams()
        self.bus = bus

    async def execute(self, task: Task, rendered: RenderedTask, info: TaskInfo) -> dict[str, Any]:
        if self.model is None or not self.model.available:
            why = self.model.load_error if self.model is not None else None
            raise TaskFailed(f"no model is available for LLM tasks{f' ({why})' if why else ''}")
        messages: list[ChatMessage] = []
        if rendered.system:
            messages.append(ChatMessage("system", str(rendered.system)))
        messages.append(ChatMessage("user", str(rendered.prompt or "")))
        # A schema constrains the whole reply to JSON, so there is no room for a <think> block.
        schema = task.schema_ if task.schema_ else None
        params = GenerationParams(**{**self.params.__dict__, "think": bool(task.think) and schema is None,
                                     "json_schema": schema})
        cancel = CancelToken()
        parts: list[str] = []
        try:
            async with self.model.turn(f"task {task.id} of run {info.run_id}") as backend:
                stream = backend.stream(messages, params, cancel)
                try:
                    async for event in stream:
                        if isinstance(event, TextDelta):
                            parts.append(event.text)
                        elif isinstance(event, Finished):
                            info.stats.update(generation_stats(event.stats))
                        if self.bus is not None and isinstance(event, TextDelta | ThinkingDelta):
                            self.bus.publish(TaskToken(info.run_id, task.id, event.text, event.kind == "thinking"))
                except BaseException:
                    cancel.cancel()  # a timeout or cancel must stop the generating thread too
                    raise
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
        except SmoltuiError as error:
            if isinstance(error, TaskFailed):
                raise
            raise TaskFailed(str(error)) from None
        text = "".join(parts)
        value: Any = text
        if task.schema_ is not None:
            value = _parse_structured(task, text)
        return name_outputs(task, value)


def generation_stats(stats: Any) -> dict[str, Any]:
    """What the run view shows of an LLM task's generation (a GenerationStats, as JSON)."""
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
            "ttft_s": round(stats.ttft_s, 3), "decode_tok_s": round(stats.decode_tok_s, 2),
            "total_s": round(stats.total_s, 3), "stop_reason": stats.stop_reason}


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _parse_structured(task: Task, text: str) -> Any:
    import jsonschema

    match = _FENCE.match(text)
    raw = match.group(1) if match else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise TaskFailed(f"task `{task.id}`: the model's output is not JSON ({error.msg} at char {error.pos}): "
                         f"{text[:200]!r}") from None
    try:
        jsonschema.validate(value, task.schema_ or {})
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise TaskFailed(f"task `{task.id}`: output does not match its schema at {where}: {error.message}") from None
    return value


# -- the runner ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    run_id: str
    state: str
    tasks: dict[str, str]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == RunState.SUCCEEDED


class WorkflowRunner:
    def __init__(
        self,
        spec: Workflow,
        run_store: RunStore,
        executors: Mapping[str, TaskExecutor],
        bus: Publisher | None = None,
        concurrency: int | None = None,
        *,
        file: str | None = None,
    ) -> None:
        self.spec = spec
        self.store = run_store
        self.executors = dict(executors)
        self.bus = bus
        self.concurrency = max(1, concurrency or spec.max_concurrent_tasks)
        self.file = file
        self.tasks = {t.id: t for t in spec.tasks}

    # -- public ----------------------------------------------------------------------------------

    async def run(self, run_id: str | None = None, variables: Mapping[str, Any] | None = None, *,
                  retry: Collection[str] | None = None) -> RunResult:
        """Run (or, given the id of an existing run, resume) the workflow; returns the end state.

        ``retry`` narrows a resume to those failed tasks: other failed tasks keep their failure
        (and their dependents stay ``upstream_failed``) instead of running again.

        Cancelling the task that awaits this marks the running tasks and the run ``cancelled``
        and re-raises :class:`asyncio.CancelledError`.
        """
        self.retry = None if retry is None else frozenset(retry)
        existing = await self.store.find_run(run_id) if run_id else None
        # The one place variables are merged: the file's defaults, then what the run was started
        # with (a variable added to the file since has its default), then this call's overrides.
        merged = {**self.spec.variables, **(existing.variables if existing else {}), **(variables or {})}
        if existing is None:
            record = await self.store.create_run(
                self.spec.id, name=self.spec.name, file=self.file,
                variables=merged, run_id=run_id, task_ids=list(self.tasks))
        else:
            record = existing
            if variables:
                await self.store.set_run_variables(record.id, merged)
        self.run_id = record.id
        self.context: dict[str, Any] = dict(merged)
        self.states: dict[str, str] = await self.store.task_states(self.run_id)
        self.outputs: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.forced_skip: set[str] = set()
        self.semaphore = asyncio.Semaphore(self.concurrency)
        self.artifacts_dir = self.store.artifacts_dir(self.run_id)
        await self._set_run(RunState.RUNNING)

        running: dict[asyncio.Task[None], str] = {}
        try:
            await self._schedule(running)
        except asyncio.CancelledError:
            for job in running:
                job.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            # The tasks that never started are cancelled too, not left "pending" as if they would.
            await despite_cancel(self._cancel_unstarted())
            await despite_cancel(self.store.set_run_state(self.run_id, RunState.CANCELLED, log=True))
            self._publish(RunStateChanged(self.run_id, RunState.CANCELLED))
            raise
        failed = any(TaskState(s).failed for s in self.states.values())
        state = RunState.FAILED if failed else RunState.SUCCEEDED
        await self._set_run(state)
        return RunResult(self.run_id, state, dict(self.states), self.outputs, self.errors)

    # -- the loop --------------------------------------------------------------------------------

    async def _schedule(self, running: dict[asyncio.Task[None], str]) -> None:
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(
            {t.id: t.depends_on for t in self.spec.tasks})
        sorter.prepare()
        while sorter.is_active():
            settled = False
            for task_id in sorter.get_ready():
                if await self._settle(self.tasks[task_id]):
                    sorter.done(task_id)
                    settled = True
                else:
                    running[asyncio.create_task(self._run_task(self.tasks[task_id]))] = task_id
            if settled:
                continue  # settling may have freed more tasks: hand them out before waiting
            if not running:
                raise RuntimeError("scheduler stalled: no task ready and none running")
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for job in finished:
                task_id = running.pop(job)
                job.result()  # _run_task records its own failures; anything here is a bug
                sorter.done(task_id)

    async def _settle(self, task: Task) -> bool:
        """Decide a task without running an executor, if it can be; True when it is decided."""
        state = self.states.get(task.id)
        if state is not None and TaskState(state).done:  # resume: finished in an earlier attempt
            if state == TaskState.SUCCEEDED:
                outputs = await self.store.task_outputs(self.run_id, task.id)
                self.outputs[task.id] = outputs
                self.context.update(outputs)
            return True
        if self.retry is not None and self.states.get(task.id) == TaskState.FAILED and task.id not in self.retry:
            record = (await self.store.task_records(self.run_id)).get(task.id)
            self.errors[task.id] = record.error if record and record.error else "failed earlier"
            return True
        deps = [self.states.get(d) for d in task.depends_on]
        bad = [d for d in task.depends_on if d in self.states and TaskState(self.states[d]).failed]
        if bad:
            await self._set_task(task, TaskState.UPSTREAM_FAILED, error=f"upstream task(s) failed: {', '.join(bad)}")
            return True
        if task.id in self.forced_skip:
            await self._skip(task, "not on the branch its conditional chose")
            return True
        if any(s == TaskState.SKIPPED for s in deps):
            await self._skip(task, "an upstream task was skipped")
            return True
        if task.when is not None:
            try:
                go = self._render(task, "when", _as_expression(task.when))
            except TaskFailed as error:
                await self._fail(task, str(error), 1)
                return True
            if not _truthy(go):
                await self._skip(task, f"`when` is false: {task.when}")
                return True
        if task.type == "conditional":
            try:
                chosen = _truthy(self._render(task, "condition", _as_expression(task.condition or "")))
            except TaskFailed as error:
                await self._fail(task, str(error), 1)
                return True
            not_chosen = task.else_ if chosen else task.then
            self.forced_skip.update(not_chosen)
            outputs = name_outputs(task, chosen)
            await self._succeed(task, outputs, 1)
            await self._log(task.id, f"condition is {'true' if chosen else 'false'}: running "
                                     f"{', '.join(task.then if chosen else task.else_) or 'nothing'}")
            return True
        return False

    async def _run_task(self, task: Task) -> None:
        """All attempts of one task: retries with exponential backoff, each under the timeout."""
        policy = task.retries
        attempts = policy.count + 1
        executor = self.executors.get(task.type)
        if executor is None:
            await self._fail(task, f"no executor for {task.type} tasks", 1)
            return
        for attempt in range(1, attempts + 1):
            try:
                async with self.semaphore:
                    await self._set_task(task, TaskState.RUNNING, attempt=attempt)
                    rendered = self._render_task(task)
                    await self.store.set_task_rendered(self.run_id, task.id,
                                            {"inputs": rendered.inputs, "prompt": rendered.prompt,
                                             "system": rendered.system})
                    deadline = _Deadline()
                    info = TaskInfo(self.run_id, task.id, attempt, self.artifacts_dir, deadline.paused)
                    try:
                        async with asyncio.timeout(task.timeout) as deadline.timeout:
                            outputs = await executor.execute(task, rendered, info)
                    finally:
                        if info.stats:  # kept with the attempt whatever its end
                            await despite_cancel(self.store.set_task_stats(self.run_id, task.id, info.stats))
            except asyncio.CancelledError:
                await despite_cancel(self.store.set_task_state(self.run_id, task.id, TaskState.CANCELLED,
                                                                attempt=attempt, error="cancelled", log=True))
                self.states[task.id] = TaskState.CANCELLED
                self._publish(TaskStateChanged(self.run_id, task.id, TaskState.CANCELLED, attempt, "cancelled"))
                raise
            except TimeoutError:
                error = f"timed out after {task.timeout:g}s"
            except TaskFailed as failure:
                error = str(failure)
            except Exception as exc:  # an executor's bug or a tool's crash: one line, the task fails
                error = f"{type(exc).__name__}: {exc}"
            else:
                await self._succeed(task, dict(outputs or {}), attempt)
                return
            if attempt < attempts:
                wait = policy.wait_before(attempt)
                await self._log(task.id, f"attempt {attempt}/{attempts} failed: {error}; retrying in {wait:g}s")
                await asyncio.sleep(wait)
            else:
                await self._fail(task, error, attempt)

    # -- rendering -------------------------------------------------------------------------------

    def _render(self, task: Task, field_name: str, value: Any) -> Any:
        try:
            return render_structure(value, self.context)
        except TemplateError as error:
            raise TaskFailed(f"task `{task.id}`: template error in `{field_name}`: {error}") from None

    def _render_task(self, task: Task) -> RenderedTask:
        inputs = {k: self._render(task, f"inputs.{k}", v) for k, v in task.inputs.items()}
        prompt = self._render(task, "prompt", task.prompt) if task.prompt is not None else None
        system = self._render(task, "system", task.system) if task.system is not None else None
        return RenderedTask(inputs, prompt, system)

    # -- durable state, then events --------------------------------------------------------------

    async def _set_run(self, state: str) -> None:
        await self.store.set_run_state(self.run_id, state, log=True)
        self._publish(RunStateChanged(self.run_id, state))

    async def _cancel_unstarted(self) -> None:
        for task_id in self.tasks:
            state = self.states.get(task_id, TaskState.PENDING)
            if not TaskState(state).finished:
                await self.store.set_task_state(self.run_id, task_id, TaskState.CANCELLED,
                                                error="not started: the run was cancelled", log=True)
                self.states[task_id] = TaskState.CANCELLED
                self._publish(TaskStateChanged(self.run_id, task_id, TaskState.CANCELLED, 0,
                                               "not started: the run was cancelled"))

    async def _set_task(self, task: Task, state: str, *, attempt: int | None = None,
                        outputs: dict[str, Any] | None = None, error: str | None = None) -> None:
        await self.store.set_task_state(self.run_id, task.id, state, attempt=attempt, outputs=outputs, error=error,
                                        log=True)
        self.states[task.id] = state
        self._publish(TaskStateChanged(self.run_id, task.id, state, attempt or 0, error))

    async def _succeed(self, task: Task, outputs: dict[str, Any], attempt: int) -> None:
        await self._set_task(task, TaskState.SUCCEEDED, attempt=attempt, outputs=outputs)
        self.outputs[task.id] = outputs
        self.context.update(outputs)

    async def _fail(self, task: Task, error: str, attempt: int) -> None:
        self.errors[task.id] = error
        await self._set_task(task, TaskState.FAILED, attempt=attempt, error=error)
        await self._log(task.id, f"failed: {error}")

    async def _skip(self, task: Task, reason: str) -> None:
        await self._set_task(task, TaskState.SKIPPED, error=None)
        await self._log(task.id, f"skipped: {reason}")

    async def _log(self, task_id: str | None, message: str) -> None:
        event_id = await self.store.add_event(self.run_id, "log", message, task_id)
        self._publish(TaskLog(self.run_id, task_id, message, event_id))

    def _publish(self, event: RunEvent) -> None:
        if self.bus is not None:
            self.bus.publish(event)


async def despite_cancel(write: Awaitable[Any]) -> None:
    """Finish a write although the task doing it is being cancelled (again): a cancelled run is
    recorded as cancelled, never left "running"."""
    job = asyncio.ensure_future(write)
    try:
        await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait({job})
        raise


def _as_expression(text: str) -> str:
    """``when``/``condition`` may be a bare expression (``x > 3``) or a template (``${x > 3}``)."""
    return text if "${" in text else "${" + text + "}"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "off", "none", "null")
    return bool(value)
