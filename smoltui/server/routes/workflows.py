"""``/api/workflows``: the workflow files in the server's folders (as the TUI's tree lists them),
and validation of a file or of YAML text."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smoltui.orchestrator.workflow_catalog import WorkflowEntry
from smoltui.server.errors import not_found
from smoltui.server.routes import core_of
from smoltui.server.wire import jsonable

router = APIRouter(prefix="/api/workflows", tags=["workflows"])


class ValidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="a workflow file on the server's machine")
    text: str | None = Field(None, description="workflow YAML to check as it is")
    name: str = Field("workflow.yaml", description="the file name problems are reported against (with text)")

    @model_validator(mode="after")
    def _one_of(self) -> ValidateBody:
        if (self.path is None) == (self.text is None):
            raise ValueError("give either path or text")
        return self


def entry_json(entry: WorkflowEntry) -> dict[str, Any]:
    return {
        "id": entry.workflow_id,
        "name": entry.name,
        "title": entry.title,
        "description": entry.description,
        "path": str(entry.path),
        "folder": entry.folder,
        "variables": jsonable(entry.variables),
        "valid": entry.valid,
        "problems": [p.as_dict() for p in entry.problems],
        "runs": [jsonable(run) for run in entry.runs],
    }


@router.get("", summary="Workflow files in the server's folders, each validated, with its recent runs")
async def list_workflows(request: Request) -> dict[str, Any]:
    snapshot = await core_of(request).catalog.scan()
    return {
        "folders": [{"label": f.label, "path": str(f.path), "exists": f not in snapshot.missing}
                    for f in snapshot.folders],
        "workflows": [entry_json(entry) for entry in snapshot.entries],
    }


@router.get("/{workflow_id}", summary="One workflow of the folders, by its id")
async def get_workflow(request: Request, workflow_id: str) -> dict[str, Any]:
    return entry_json(await find_workflow(request, workflow_id))


async def find_workflow(request: Request, workflow_id: str) -> WorkflowEntry:
    snapshot = await core_of(request).catalog.scan()
    for entry in snapshot.entries:
        if entry.workflow_id == workflow_id:
            return entry
    known = ", ".join(sorted(e.workflow_id for e in snapshot.entries if e.workflow_id)) or "none"
    raise not_found(f"no workflow with id {workflow_id!r} in the server's folders (ids: {known})")


@router.post("/validate", summary="Every problem of a workflow file or of YAML text")
async def validate(request: Request, body: ValidateBody) -> dict[str, Any]:
    from smoltui.orchestrator.workflow_validate import validate_text, validate_workflow

    tools = core_of(request).tools
    if body.path is not None:
        path = Path(body.path).expanduser()
        if not path.is_file():
            raise not_found(f"no workflow file {path} on the server")
        problems = await asyncio.to_thread(validate_workflow, path, tools=tools)
    else:
        assert body.text is not None
        problems = await asyncio.to_thread(validate_text, body.text, body.name, tools=tools)
    return {"valid": not problems, "problems": [p.as_dict() for p in problems]}
