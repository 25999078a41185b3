"""``/api/runs``: workflow runs driven by the server's run manager: start, cancel, resume, retry a
task; read states, log lines and outputs; download the files a run wrote.

A run belongs to the server, never to the request that started it. Files are served only from the
run's own folder (``<data dir>/runs/<run id>``): a path that resolves anywhere else (``..``, an
absolute path, a symbolic link pointing out) is refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from smoltui.core import Core
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.run_manager import run_state_now
from smoltui.orchestrator.run_store import RunRecord
from smoltui.run_outputs import describe, final_tasks, inside
from smoltui.server.errors import ApiError, conflict, not_found
from smoltui.server.routes import core_of
from smoltui.server.routes.approvals import APPROVE_HELP, FlagAnswers
from smoltui.server.wire import approval, jsonable

router = APIRouter(prefix="/api/runs", tags=["runs"])

class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str = Field(description="a workflow file on the server's machine, or the id of one in its folders")
    variables: dict[str, Any] = Field(default_factory=dict, description="variable values (JSON)")
    assignments: list[str] = Field(default_factory=list, description="NAME=VALUE pairs read as YAML, like --var")
    concurrency: int | None = Field(None, ge=1)
    workspace: str | None = Field(None, description="folder tool calls may touch (default: the file's folder)")
    approve: str | None = Field(None, max_length=2000, description=APPROVE_HELP)


class Resume(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retry: list[str] | None = Field(None, description="only these failed tasks (and what depends on them)")
    variables: dict[str, Any] = Field(default_factory=dict)
    assignments: list[str] = Field(default_factory=list)
    concurrency: int | None = Field(None, ge=1)
    workspace: str | None = None
    approve: str | None = Field(None, max_length=2000, description=APPROVE_HELP)


def run_json(core: Core, record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "workflow_id": record.workflow_id,
        "name": record.name,
        "file": record.file,
        "variables": jsonable(record.variables),
        "state": run_state_now(record).value,
        "stored_state": record.state,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "pid": record.pid,
        "running_here": core.runs.is_running(record.id),
    }


async def _record(core: Core, run_id: str) -> RunRecord:
    record = await core.run_store.find_run(run_id)
    if record is None:
        raise not_found(f"no workflow run {run_id}")
    return record


@router.get("", summary="Runs, newest first")
async def list_runs(request: Request, limit: int | None = Query(None, ge=1, le=10_000)) -> list[dict[str, Any]]:
    core = core_of(request)
    return [{**run_json(core, record), "task_states": await core.run_store.task_states(record.id)}
            for record in await core.run_store.list_runs(limit)]


@router.post("", status_code=201, summary="Start a run of a workflow (validated first)")
async def launch(request: Request, body: Launch) -> dict[str, Any]:
    core = core_of(request)
    file = await _workflow_file(request, body.workflow)
    variables = await _variables(file, body.variables, body.assignments)
    answers = FlagAnswers(request, body.approve)
    try:
        run_id = await core.runs.launch(file, variables, concurrency=body.concurrency,
                                        workspace=_folder(body.workspace))
    except BaseException:
        answers.close()
        raise
    answers.watch_run(run_id)
    return run_json(core, await _record(core, run_id))


async def _workflow_file(request: Request, workflow: str) -> Path:
    path = Path(workflow).expanduser()
    if path.suffix in (".yaml", ".yml") or "/" in workflow:
        if not path.is_file():
            raise not_found(f"no workflow file {path} on the server")
        return path.resolve()
    from smoltui.server.routes.workflows import find_workflow

    return (await find_workflow(request, workflow)).path


async def _variables(file: Path | str, values: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    if not assignments:
        return values
    from smoltui.orchestrator.workflow_spec import load_workflow, parse_var_assignments

    spec = (await asyncio.to_thread(load_workflow, file)).spec
    return {**values, **parse_var_assignments(spec, assignments)}


def _folder(workspace: str | None) -> Path | None:
    if workspace is None:
        return None
    folder = Path(workspace).expanduser()
    if not folder.is_dir():
        raise not_found(f"no folder {folder} on the server (workspace)")
    return folder.resolve()


@router.get("/{run_id}", summary="A run, its tasks and the calls it waits on")
async def get_run(request: Request, run_id: str) -> dict[str, Any]:
    core = core_of(request)
    record = await _record(core, run_id)
    tasks = await core.run_store.task_records(run_id)
    final = await asyncio.to_thread(final_tasks, record.file, list(tasks))
    return {
        **run_json(core, record),
        "tasks": [_task_json(run_id, task) for task in tasks.values()],
        "final_tasks": final,
        "approvals": [approval(r) for r in core.gate.waiting(run_id=run_id)],
    }


def _task_json(run_id: str, task: Any) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "state": task.state,
        "attempt": task.attempt,
        "error": task.error,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "outputs": describe(run_id, task.outputs) if task.outputs is not None else None,
        "rendered": task.rendered,
    }


@router.get("/{run_id}/tasks/{task_id}", summary="One task of a run")
async def get_task(request: Request, run_id: str, task_id: str) -> dict[str, Any]:
    core = core_of(request)
    await _record(core, run_id)
    task = (await core.run_store.task_records(run_id)).get(task_id)
    if task is None:
        raise not_found(f"run {run_id} has no task {task_id!r}")
    return _task_json(run_id, task)


@router.get("/{run_id}/tasks/{task_id}/outputs",
            summary="A task's outputs: values as JSON, tables with a preview, files with a download link")
async def task_outputs(request: Request, run_id: str, task_id: str) -> dict[str, Any]:
    core = core_of(request)
    await _record(core, run_id)
    task = (await core.run_store.task_records(run_id)).get(task_id)
    if task is None:
        raise not_found(f"run {run_id} has no task {task_id!r}")
    outputs = await asyncio.to_thread(describe, run_id, task.outputs or {}, core.run_store.runs_dir, True)
    return {"run_id": run_id, "task_id": task_id, "state": task.state, "outputs": outputs}


@router.get("/{run_id}/logs", summary="A run's log lines after an id, oldest first")
async def logs(request: Request, run_id: str, after: int = Query(0, ge=0)) -> list[dict[str, Any]]:
    core = core_of(request)
    await _record(core, run_id)
    return [jsonable(event) for event in await core.run_store.events(run_id, after)]


@router.get("/{run_id}/files", summary="Download a file from the run's folder",
            responses={200: {"content": {"application/octet-stream": {}}}})
async def run_file(request: Request, run_id: str, path: str = Query(min_length=1)) -> FileResponse:
    core = core_of(request)
    await _record(core, run_id)
    folder = core.run_store.runs_dir / run_id
    candidate = Path(path)
    target = inside(candidate if candidate.is_absolute() else folder / candidate, folder)
    if target is None:
        raise ApiError(403, f"{path} is not a file in the folder of run {run_id}; only those are served", "forbidden")
    if not target.is_file():
        raise not_found(f"run {run_id} has no file {path}")
    return FileResponse(target, filename=target.name)


@router.post("/{run_id}/cancel", summary="Cancel a run the server is driving (it can be resumed)")
async def cancel(request: Request, run_id: str) -> dict[str, Any]:
    core = core_of(request)
    record = await _record(core, run_id)
    # A run that has ended is not running though its job may still be letting its lease go.
    if run_state_now(record).finished or not core.runs.cancel(run_id):
        raise conflict(f"run {run_id} is not running on this server (state: {run_state_now(record).value})")
    return {"run_id": run_id, "cancelled": True}


@router.post("/{run_id}/resume", summary="Run an earlier run again; finished tasks keep their results")
async def resume(request: Request, run_id: str, body: Resume | None = None) -> dict[str, Any]:
    core = core_of(request)
    body = body or Resume()
    record = await _record(core, run_id)
    if not record.file:
        raise conflict(f"run {run_id} does not record its workflow file; it cannot be resumed")
    variables = await _variables(record.file, body.variables, body.assignments)
    try:
        answers = FlagAnswers(request, body.approve)
        answers.watch_run(run_id)
        try:
            await core.runs.resume(run_id, retry=body.retry, variables=variables, concurrency=body.concurrency,
                                   workspace=_folder(body.workspace))
        except BaseException:
            answers.close()
            raise
    except SmoltuiError as error:
        if type(error) is SmoltuiError:  # already running, already succeeded: the run's state says no
            raise conflict(str(error)) from None
        raise
    return run_json(core, await _record(core, run_id))


@router.post("/{run_id}/tasks/{task_id}/retry", summary="Run one failed task again (its dependents follow)")
async def retry(request: Request, run_id: str, task_id: str) -> dict[str, Any]:
    core = core_of(request)
    await _record(core, run_id)
    if task_id not in await core.run_store.task_states(run_id):
        raise not_found(f"run {run_id} has no task {task_id!r}")
    try:
        await core.runs.retry_task(run_id, task_id)
    except SmoltuiError as error:
        if type(error) is SmoltuiError:
            raise conflict(str(error)) from None
        raise
    return run_json(core, await _record(core, run_id))


@router.get("/{run_id}/approvals", summary="The calls of this run waiting for a person")
async def run_approvals(request: Request, run_id: str) -> list[dict[str, Any]]:
    core = core_of(request)
    await _record(core, run_id)
    return [approval(r) for r in core.gate.waiting(run_id=run_id)]
