"""``/api/approvals``: tool calls waiting for a person, from any chat or run on the server, and the
answers to them. An answer goes to the core's approval gate (the same one every client and run
shares), which records it and only then runs the call. Answering a call twice is a 409, and the
first answer stands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smoltui.server.errors import ApiError, not_found
from smoltui.server.routes import core_of, server_state
from smoltui.server.wire import approval
from smoltui.tools.calls import ApproveFlag, Decision, ToolCall

router = APIRouter(prefix="/api/approvals", tags=["approvals"])


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["once", "always", "deny", "always_deny", "edit"]
    reason: str | None = Field(None, max_length=2000, description="deny: told to the model")
    arguments: dict[str, Any] | None = Field(None, description="edit: the arguments to run instead")

    @model_validator(mode="after")
    def _edit_has_arguments(self) -> Answer:
        if self.decision == "edit" and self.arguments is None:
            raise ValueError("an 'edit' decision needs the edited arguments")
        if self.decision != "edit" and self.arguments is not None:
            raise ValueError("arguments go only with an 'edit' decision")
        return self


class Approve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    always: bool = Field(False, description="also approve later calls of this tool in the same chat or run")


class Deny(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=2000, description="told to the model")
    always: bool = Field(False, description="also deny later calls of this tool in the same chat or run")


@router.get("", summary="Calls waiting for an answer, the longest-waiting first")
async def waiting(request: Request, run_id: str | None = Query(None),
                  session_id: int | None = Query(None)) -> list[dict[str, Any]]:
    return [approval(r) for r in core_of(request).gate.waiting(run_id=run_id, session_id=session_id)]


@router.get("/{call_id}", summary="One waiting call")
async def get_one(request: Request, call_id: str) -> dict[str, Any]:
    for request_ in core_of(request).gate.waiting():
        if request_.call.id == call_id:
            return approval(request_)
    server_state(request).refuse_settled(call_id)
    raise not_found(f"no call {call_id} is waiting for approval")  # not reached: refuse_settled raises


@router.post("/{call_id}", summary="Answer a call: once, always, deny, always_deny or edit")
async def answer(request: Request, call_id: str, body: Answer) -> dict[str, Any]:
    return _settle(request, call_id, Decision(body.decision, arguments=body.arguments, reason=body.reason))


@router.post("/{call_id}/approve", summary="Approve a call (always: its later calls too)")
async def approve(request: Request, call_id: str, body: Approve | None = None) -> dict[str, Any]:
    return _settle(request, call_id, Decision("always" if body is not None and body.always else "once"))


@router.post("/{call_id}/deny", summary="Deny a call, with a reason the model is told")
async def deny(request: Request, call_id: str, body: Deny | None = None) -> dict[str, Any]:
    body = body or Deny()
    return _settle(request, call_id, Decision("always_deny" if body.always else "deny", reason=body.reason))


def _settle(request: Request, call_id: str, decision: Decision) -> dict[str, Any]:
    server_state(request).answer(call_id, decision)
    return {"call_id": call_id, "decision": decision.kind, "reason": decision.reason}


APPROVE_HELP = ("like the command line's --approve (none, all, read or TOOL[,TOOL...]): the server answers the "
                "calls of this request itself, approving what the value allows and denying the rest; without "
                "it, they wait for a person (/api/approvals)")


class FlagAnswers:
    """Answers the calls of one run (or one tool call) as a headless command's ``--approve`` would:
    approved when the value allows the call, denied otherwise. Listening starts before the work
    does, so no ask is missed; an ask heard before :meth:`watch_run` names the run waits for it.
    A person may still answer first (through ``/api/approvals``): their answer stands."""

    def __init__(self, request: Request, approve: str | None) -> None:
        self.state = server_state(request)
        core = core_of(request)
        self.approve = approve
        self.flag = ApproveFlag.parse(approve, known_tools=core.tools.names()) if approve is not None else None
        self.match: Callable[[ToolCall], bool] | None = None
        self.run_id: str | None = None
        self.early: list[Any] = []
        self._unsubscribe = core.bus.subscribe(self._hear) if self.flag is not None else None

    def watch(self, match: Callable[[ToolCall], bool]) -> None:
        self.match = match
        early, self.early = self.early, []
        for request in early:
            if match(request.call):
                self._settle(request)

    def watch_run(self, run_id: str) -> None:
        """Answer this run's calls until it finishes."""
        self.run_id = run_id
        self.watch(lambda call: call.run_id == run_id)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _hear(self, event: Any) -> None:
        if event.kind == "approval_needed":
            if self.match is None:
                self.early.append(event.request)
            elif self.match(event.request.call):
                self._settle(event.request)
        elif event.kind == "run_finished" and self.run_id is not None and event.run_id == self.run_id:
            self.close()

    def _settle(self, request: Any) -> None:
        assert self.flag is not None
        call = request.call
        if self.flag.allows(call.tool, request.risk):
            decision = Decision("once")
        else:
            decision = Decision("deny", reason=f"--approve {self.approve} does not allow {call.tool} (risk {request.risk})")
        with contextlib.suppress(ApiError):  # answered meanwhile by a person: theirs stands
            self.state.answer(call.id, decision)
