"""The approval gate: every tool call passes here, is decided, recorded, and only then runs.

The decision comes from, in order: a ``deny`` in the policy (absolute), what the user said with
"always" / "always deny" earlier in the same chat session or run, then the policy (per-tool
override, else the default for the call's risk). ``ask`` publishes :class:`ApprovalNeeded` with an
:class:`ApprovalRequest` and waits for :meth:`ApprovalGate.answer` (from whichever front end the
person uses) or the timeout, which denies. The gate is UI-agnostic: the TUI shows a modal, a headless run
uses :meth:`Policy.from_approve_flag`, which never asks.

Every call, run or not, leaves exactly one audit row. A call that runs has its row (with the
decision) written *before* it runs and completed with the result after; a call that cannot be
recorded does not run. The row is written before :class:`ToolCallFinished` is published.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from smoltui.errors import SmoltuiError
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.events import ApprovalNeeded, Publisher, ToolCallFinished
from smoltui.tools.base import Tool, ToolContext, ToolResult
from smoltui.tools.calls import ApprovalRequest, Decision, Policy, ToolCall
from smoltui.tools.registry import ToolRegistry, validate_arguments

log = logging.getLogger(__name__)

__all__ = ["ApprovalGate", "ApprovalNeeded", "ApprovalRequest", "Decision", "Policy", "ToolCall",
           "ToolCallFinished", "risk_of"]


def risk_of(tool: Tool, arguments: Mapping[str, Any]) -> str:
    """The risk of one call (a tool whose risk depends on its arguments, like the seed's
    ``filesystem``, says so through ``risk_for``)."""
    return tool.risk_for(arguments)


_E = TypeVar("_E", ApprovalNeeded, ToolCallFinished)


@dataclass
class _Waiting:
    """A call waiting for an answer: what was asked, and the future the answer resolves."""

    request: ApprovalRequest
    future: asyncio.Future[Decision]


# -- the gate --------------------------------------------------------------------------------------


class ApprovalGate:
    def __init__(
        self,
        registry: ToolRegistry,
        policy: Policy,
        *,
        audit: AuditLog,
        bus: Publisher | None = None,
        timeout_s: float | None = 300,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.audit = audit
        self.bus = bus
        self.timeout_s = timeout_s
        self._waiting: dict[str, _Waiting] = {}
        # (session_id, run_id) -> tool name -> "allow" | "deny", from "always" / "always deny".
        self._remembered: dict[tuple[int | None, str | None], dict[str, str]] = {}
        self._settled_by_memory: set[str] = set()

    # -- answers from the UI ---------------------------------------------------------------------

    def answer(self, call_id: str, decision: Decision) -> bool:
        """Resolve a pending call; False if there is none (answered already, or timed out)."""
        waiting = self._waiting.get(call_id)
        if waiting is None or waiting.future.done():
            return False
        waiting.future.set_result(decision)
        return True

    def waiting(self, *, run_id: str | None = None, session_id: int | None = None) -> list[ApprovalRequest]:
        """Calls waiting for an answer, the one that has waited longest first (of one run or chat,
        or all of them)."""
        found = [w.request for w in self._waiting.values() if not w.future.done()]
        if run_id is not None:
            found = [r for r in found if r.call.run_id == run_id]
        if session_id is not None:
            found = [r for r in found if r.call.session_id == session_id]
        return sorted(found, key=lambda r: r.asked_at)

    def is_waiting(self, call_id: str) -> bool:
        waiting = self._waiting.get(call_id)
        return waiting is not None and not waiting.future.done()

    def remembered(self, session_id: int | None, run_id: str | None) -> dict[str, str]:
        """What "always" / "always deny" settled for one session or run: tool -> allow/deny."""
        return dict(self._remembered.get((session_id, run_id), {}))

    def forget(self, session_id: int | None = None, run_id: str | None = None) -> None:
        self._remembered.pop((session_id, run_id), None)

    # -- the call --------------------------------------------------------------------------------

    async def run(self, call: ToolCall, ctx: ToolContext, *,
                  while_asking: Callable[[], AbstractAsyncContextManager[Any]] | None = None) -> ToolResult:
        """Decide, record and (if allowed) run one call; its result. Never raises for a bad or
        refused call."""
        return (await self.settle(call, ctx, while_asking=while_asking)).result

    async def settle(self, call: ToolCall, ctx: ToolContext, *,
                     while_asking: Callable[[], AbstractAsyncContextManager[Any]] | None = None) -> ToolCallFinished:
        """Decide, record and (if allowed) run one call: how it ended (the call as it ran, after an
        edit; its result; the decision and who made it), as announced on the bus.

        ``while_asking`` wraps the wait for the user's answer (a workflow task pauses its timeout
        there: time spent reading a request is not time the tool ran).
        """
        started_at = time.time()
        tool = self.registry.get(call.tool)
        if tool is None:
            result = await self.registry.call(call.tool, call.arguments, ctx)
            return await self._finish(call, result, "none", "registry", started_at)
        parsed, problem = validate_arguments(tool, call.arguments)
        if parsed is None:  # nobody is asked to approve a call that could not run anyway
            result = ToolResult.failure("invalid_arguments", problem)
            return await self._finish(call, result, "none", "registry", started_at)

        risk = risk_of(tool, call.arguments)
        mode = self.policy.mode(tool.name, risk)
        memory = self._remembered.get(_key(call), {}).get(_memory_name(tool, risk))
        if mode == "deny":
            return await self._refuse(call, tool, "deny", "policy", started_at,
                                      f"{tool.name} was denied by policy (risk {risk})")
        if memory == "deny":
            return await self._refuse(call, tool, "deny", "session", started_at,
                                      f"{tool.name} was denied: you chose 'always deny' for it earlier")
        if memory == "allow":
            return await self._execute(call, tool, ctx, "always", "session", started_at)
        if mode == "auto":
            return await self._execute(call, tool, ctx, "auto", "policy", started_at)

        if while_asking is not None:
            async with while_asking():
                decision, decided_by = await self._ask(call, tool)
        else:
            decision, decided_by = await self._ask(call, tool)
        if decision is None:
            return await self._refuse(call, tool, "deny", decided_by, started_at,
                                      f"{tool.name} was denied: no answer within {self.timeout_s:g} s")
        if decision.kind in ("always", "always_deny"):
            self._remember(call, tool, risk, decision)
        if decision.kind == "edit":
            assert decision.arguments is not None
            edited = dataclasses.replace(call, arguments=dict(decision.arguments))
            parsed, problem = validate_arguments(tool, edited.arguments)
            if parsed is None:
                result = ToolResult.failure("invalid_arguments", problem)
                return await self._finish(edited, result, "edit", decided_by, started_at,
                                          original_arguments=call.arguments)
            edited_risk = risk_of(tool, edited.arguments)
            if self.policy.mode(tool.name, edited_risk) == "deny":  # an edit cannot reach what the policy refuses
                return await self._refuse(edited, tool, "deny", "policy", started_at,
                                          f"{tool.name} was denied by policy (risk {edited_risk})")
            return await self._execute(edited, tool, ctx, "edit", decided_by, started_at,
                                       original_arguments=call.arguments)
        if not decision.allows:
            who = "earlier" if decided_by == "session" else "by the user"
            reason = f": {decision.reason.strip()}" if decision.reason and decision.reason.strip() else ""
            return await self._refuse(call, tool, decision.kind, decided_by, started_at,
                                      f"{tool.name} was denied {who}{reason}")
        return await self._execute(call, tool, ctx, decision.kind, decided_by, started_at)

    async def _ask(self, call: ToolCall, tool: Tool) -> tuple[Decision | None, str]:
        """(the answer, who gave it) or (None, "timeout")."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        lines = (tool.description or "").strip().splitlines()
        request = ApprovalRequest(call, risk_of(tool, call.arguments), tool.origin, lines[0] if lines else "",
                                  time.time())
        self._waiting[call.id] = _Waiting(request, future)
        try:
            self._publish(ApprovalNeeded(request))
            try:
                decision = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
            except TimeoutError:
                return None, "timeout"
            except asyncio.CancelledError:
                # The caller gave up (reply stopped, run cancelled): nothing ran, but the trail says
                # so, and the end is announced like any other, so a waiting card and the count of
                # waiting calls go with it.
                result = ToolResult.failure("denied", f"{tool.name} was cancelled before an answer")
                self._waiting.pop(call.id, None)
                try:
                    audit_id = await asyncio.shield(self._record_quietly(call, "deny", "cancelled", time.time(), result))
                except asyncio.CancelledError:  # cancelled again: the shielded write still lands
                    audit_id = None
                self._publish(ToolCallFinished(call, result, "deny", "cancelled", audit_id))
                raise
        finally:
            self._waiting.pop(call.id, None)
            if not future.done():
                future.cancel()
        if call.id in self._settled_by_memory:
            self._settled_by_memory.discard(call.id)
            return decision, "session"
        return decision, "user"

    def _remember(self, call: ToolCall, tool: Tool, risk: str, decision: Decision) -> None:
        verdict = "allow" if decision.kind == "always" else "deny"
        key = _key(call)
        self._remembered.setdefault(key, {})[_memory_name(tool, risk)] = verdict
        # Calls to the same tool (at the same risk) already waiting in the same session/run get
        # the same answer.
        for other in list(self._waiting.values()):
            other_call = other.request.call
            if other_call.id != call.id and other_call.tool == tool.name and _key(other_call) == key \
                    and other.request.risk == risk and not other.future.done():
                self._settled_by_memory.add(other_call.id)
                other.future.set_result(Decision("once" if verdict == "allow" else "deny"))

    async def _refuse(self, call: ToolCall, tool: Tool, decision: str, decided_by: str,
                      started_at: float, message: str) -> ToolCallFinished:
        return await self._finish(call, ToolResult.failure("denied", message), decision, decided_by, started_at)

    async def _execute(self, call: ToolCall, tool: Tool, ctx: ToolContext, decision: str, decided_by: str,
                       started_at: float, *, original_arguments: Mapping[str, Any] | None = None) -> ToolCallFinished:
        # The decision is on disk before the tool runs; if it cannot be written, the tool does not run.
        try:
            audit_id = await self.audit.record(
                call, decision=decision, decided_by=decided_by, result=None,
                duration_s=None, started_at=started_at, original_arguments=original_arguments,
            )
        except SmoltuiError as error:
            log.error("audit write failed for %s: %s", call.tool, error)
            result = ToolResult.failure("failed", f"{call.tool} was not run: the audit log could not be written ({error})")
            return self._publish(ToolCallFinished(call, result, decision, decided_by, None))
        result = await self.registry.call(tool.name, call.arguments, ctx)
        try:
            await self.audit.complete(audit_id, result)
        except SmoltuiError:
            log.exception("could not record the result of %s (audit row %s)", call.tool, audit_id)
        return self._publish(ToolCallFinished(call, result, decision, decided_by, audit_id))

    async def _finish(self, call: ToolCall, result: ToolResult, decision: str, decided_by: str,
                      started_at: float, *, original_arguments: Mapping[str, Any] | None = None) -> ToolCallFinished:
        """Record a call that did not run (refused or invalid), then publish it."""
        try:
            audit_id: int | None = await self.audit.record(
                call, decision=decision, decided_by=decided_by, result=result,
                duration_s=result.duration_s, started_at=started_at, original_arguments=original_arguments,
            )
        except SmoltuiError:
            log.exception("could not record the refused call to %s", call.tool)
            audit_id = None
        return self._publish(ToolCallFinished(call, result, decision, decided_by, audit_id))

    async def _record_quietly(self, call: ToolCall, decision: str, decided_by: str, started_at: float,
                              result: ToolResult) -> int | None:
        try:
            return await self.audit.record(call, decision=decision, decided_by=decided_by, result=result,
                                     duration_s=0.0, started_at=started_at)
        except SmoltuiError:
            log.exception("could not record the cancelled call to %s", call.tool)
            return None

    def _publish(self, event: _E) -> _E:
        if self.bus is not None:
            self.bus.publish(event)
        return event


def _memory_name(tool: Tool, risk: str) -> str:
    """What "always" remembers: the tool, and for a tool whose risk depends on the call, that risk
    too ("always" for a filesystem read must not let its writes through)."""
    return tool.name if tool.call_risk is None else f"{tool.name}:{risk}"


def _key(call: ToolCall) -> tuple[int | None, str | None]:
    return (call.session_id, call.run_id)
