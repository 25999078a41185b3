"""The approval gate: every tool call passes here, is decided, recorded, and only then runs.

The decision comes from, in order: a ``deny`` in the policy (absolute), what the user said with
"always" / "always deny" earlier in the same chat session or run, then the policy (per-tool
override, else the default for the tool's risk). ``ask`` creates a :class:`PendingApproval`,
publishes :class:`ApprovalNeeded` and waits for :meth:`ApprovalGate.answer` (the UI resolves the
future) or the timeout, which denies. The gate is UI-agnostic: the TUI shows a modal, a headless run
uses :meth:`Policy.from_approve_flag`, which never asks.

Every call, run or not, leaves exactly one audit row. A call that runs has its row (with the
decision) written *before* it runs and completed with the result after; a call that cannot be
recorded does not run. The row is written before :class:`ToolCallFinished` is published.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from smoltui.errors import ConfigError, SmoltuiError
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.events import EventBus
from smoltui.tools.base import RISKS, Risk, Tool, ToolContext, ToolResult
from smoltui.tools.registry import ToolRegistry, validate_arguments

log = logging.getLogger(__name__)

Mode = Literal["auto", "ask", "deny"]
DecisionKind = Literal["once", "always", "deny", "always_deny", "edit"]
DECISION_KINDS: tuple[str, ...] = ("once", "always", "deny", "always_deny", "edit")

DEFAULT_RISK_MODES: dict[str, Mode] = {"read": "auto", "write": "ask", "execute": "ask", "network": "ask"}

APPROVE_FLAG_HELP = (
    "headless approvals: none (refuse anything that would ask), all (run every call), "
    "read (read-only tools only), or TOOL[,TOOL...] (those tools, plus read-only ones)"
)
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


# -- policy ----------------------------------------------------------------------------------------


class Policy(BaseModel):
    """Which tool calls run, ask, or are refused.

    ``defaults`` maps each risk to a mode (missing risks keep the built-in default);
    ``tools`` maps a tool name to a mode and wins over its risk's default.
    """

    model_config = ConfigDict(extra="forbid")

    defaults: dict[Risk, Mode] = Field(default_factory=lambda: dict(DEFAULT_RISK_MODES))
    tools: dict[str, Mode] = Field(default_factory=dict, description="tool name -> auto, ask or deny")

    @field_validator("defaults")
    @classmethod
    def _fill_defaults(cls, value: dict[Risk, Mode]) -> dict[Risk, Mode]:
        return {**DEFAULT_RISK_MODES, **value}  # type: ignore[dict-item]

    def decide(self, tool: Tool) -> Mode:
        """The mode for one tool: its override if it has one, else its risk's default."""
        override = self.tools.get(tool.name)
        if override is not None:
            return override
        return self.defaults.get(tool.risk, "ask")

    def headless(self) -> Policy:
        """The same policy with nobody to ask: every ``ask`` becomes ``deny``."""
        return Policy(
            defaults={risk: _no_ask(mode) for risk, mode in self.defaults.items()},
            tools={name: _no_ask(mode) for name, mode in self.tools.items()},
        )

    @classmethod
    def from_approve_flag(
        cls, flag: str, base: Policy | None = None, *, known_tools: Mapping[str, Any] | None = None
    ) -> Policy:
        """The policy for a headless run's ``--approve`` value; never answers ``ask``.

        - ``none``: ``base`` (the configured policy) with every ask turned into deny;
        - ``all``: everything runs, except tools ``base`` explicitly denies;
        - ``read``: read-risk tools run, everything else is refused;
        - ``TOOL[,TOOL...]``: the named tools run; the rest as in ``none``.

        ``known_tools`` (names of the registered tools), when given, makes an unknown name an error.
        Bad values raise :class:`ConfigError` with a one-line message.
        """
        base = base or cls()
        denied = {name: mode for name, mode in base.tools.items() if mode == "deny"}
        value = (flag or "").strip()
        if value == "none":
            return base.headless()
        if value == "all":
            return cls(defaults=dict.fromkeys(RISKS, "auto"), tools=denied)
        if value == "read":
            return cls(defaults={r: "auto" if r == "read" else "deny" for r in RISKS}, tools=denied)
        names = [part.strip() for part in value.split(",")]
        bad = [name for name in names if not _TOOL_NAME.match(name)]
        if not value or bad:
            shown = repr(flag) if not value else ", ".join(repr(n) for n in bad)
            raise ConfigError(
                f"--approve: {shown} is not a valid value; use none, all, read, or TOOL[,TOOL...]"
            )
        if known_tools is not None:
            unknown = [name for name in names if name not in known_tools]
            if unknown:
                known = ", ".join(sorted(known_tools)) or "none"
                raise ConfigError(
                    f"--approve: no tool named {', '.join(map(repr, unknown))} (tools: {known})"
                )
        policy = base.headless()
        return cls(defaults=policy.defaults, tools={**policy.tools, **dict.fromkeys(names, "auto")})


def _no_ask(mode: Mode) -> Mode:
    return "deny" if mode == "ask" else mode


# -- calls, decisions, events ----------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One call the model (or a workflow task) wants to make."""

    id: str
    tool: str
    arguments: dict[str, Any]
    session_id: int | None = None
    run_id: str | None = None
    task_id: str | None = None

    @classmethod
    def new(
        cls,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        session_id: int | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
    ) -> ToolCall:
        """A call with a fresh id."""
        return cls(uuid.uuid4().hex, tool, dict(arguments or {}), session_id, run_id, task_id)


@dataclass(frozen=True)
class Decision:
    """The user's answer. ``edit`` carries the arguments to run instead of the proposed ones."""

    kind: DecisionKind
    arguments: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in DECISION_KINDS:
            raise ValueError(f"decision must be one of {', '.join(DECISION_KINDS)}, not {self.kind!r}")
        if self.kind == "edit" and self.arguments is None:
            raise ValueError("an 'edit' decision needs the edited arguments")

    @property
    def allows(self) -> bool:
        return self.kind in ("once", "always", "edit")


@dataclass
class PendingApproval:
    """A call waiting for the user; resolve ``future`` (or call ``ApprovalGate.answer``)."""

    call: ToolCall
    tool: Tool
    future: asyncio.Future[Decision]
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ApprovalNeeded:
    pending: PendingApproval
    kind: Literal["approval_needed"] = "approval_needed"


@dataclass(frozen=True)
class ToolCallFinished:
    """A call is over (run, refused, or failed before running); its audit row is already written."""

    call: ToolCall
    result: ToolResult
    decision: str
    decided_by: str
    audit_id: int | None
    kind: Literal["tool_call_finished"] = "tool_call_finished"


# -- the gate --------------------------------------------------------------------------------------


class ApprovalGate:
    def __init__(
        self,
        registry: ToolRegistry,
        policy: Policy,
        *,
        audit: AuditLog,
        bus: EventBus | None = None,
        timeout_s: float | None = 300,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.audit = audit
        self.bus = bus
        self.timeout_s = timeout_s
        self.pending: dict[str, PendingApproval] = {}
        # (session_id, run_id) -> tool name -> "allow" | "deny", from "always" / "always deny".
        self._remembered: dict[tuple[int | None, str | None], dict[str, str]] = {}
        self._settled_by_memory: set[str] = set()

    # -- answers from the UI ---------------------------------------------------------------------

    def answer(self, call_id: str, decision: Decision) -> bool:
        """Resolve a pending call; False if there is none (answered already, or timed out)."""
        pending = self.pending.get(call_id)
        if pending is None or pending.future.done():
            return False
        pending.future.set_result(decision)
        return True

    def remembered(self, session_id: int | None, run_id: str | None) -> dict[str, str]:
        """What "always" / "always deny" settled for one session or run: tool -> allow/deny."""
        return dict(self._remembered.get((session_id, run_id), {}))

    def forget(self, session_id: int | None = None, run_id: str | None = None) -> None:
        self._remembered.pop((session_id, run_id), None)

    # -- the call --------------------------------------------------------------------------------

    async def run(self, call: ToolCall, ctx: ToolContext, *,
                  while_asking: Callable[[], AbstractAsyncContextManager[Any]] | None = None) -> ToolResult:
        """Decide, record and (if allowed) run one call. Never raises for a bad or refused call.

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

        mode = self.policy.decide(tool)
        memory = self._remembered.get(_key(call), {}).get(tool.name)
        if mode == "deny":
            return await self._refuse(call, tool, "deny", "policy", started_at,
                                      f"{tool.name} was denied by policy (risk {tool.risk})")
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
            self._remember(call, tool, decision)
        if decision.kind == "edit":
            assert decision.arguments is not None
            edited = dataclasses.replace(call, arguments=dict(decision.arguments))
            parsed, problem = validate_arguments(tool, edited.arguments)
            if parsed is None:
                result = ToolResult.failure("invalid_arguments", problem)
                return await self._finish(edited, result, "edit", decided_by, started_at,
                                          original_arguments=call.arguments)
            return await self._execute(edited, tool, ctx, "edit", decided_by, started_at,
                                       original_arguments=call.arguments)
        if not decision.allows:
            who = "earlier" if decided_by == "session" else "by the user"
            return await self._refuse(call, tool, decision.kind, decided_by, started_at,
                                      f"{tool.name} was denied {who}")
        return await self._execute(call, tool, ctx, decision.kind, decided_by, started_at)

    async def _ask(self, call: ToolCall, tool: Tool) -> tuple[Decision | None, str]:
        """(the answer, who gave it) or (None, "timeout")."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        pending = PendingApproval(call, tool, future)
        self.pending[call.id] = pending
        try:
            self._publish(ApprovalNeeded(pending))
            try:
                decision = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
            except TimeoutError:
                return None, "timeout"
            except asyncio.CancelledError:
                # The caller gave up (reply stopped, run cancelled): nothing ran, but the trail says
                # so, and the end is announced like any other, so a waiting card and the count of
                # waiting calls go with it.
                result = ToolResult.failure("denied", f"{tool.name} was cancelled before an answer")
                audit_id = self._record_quietly(call, "deny", "cancelled", time.time(), result)
                self.pending.pop(call.id, None)
                self._publish(ToolCallFinished(call, result, "deny", "cancelled", audit_id))
                raise
        finally:
            self.pending.pop(call.id, None)
            if not future.done():
                future.cancel()
        if call.id in self._settled_by_memory:
            self._settled_by_memory.discard(call.id)
            return decision, "session"
        return decision, "user"

    def _remember(self, call: ToolCall, tool: Tool, decision: Decision) -> None:
        verdict = "allow" if decision.kind == "always" else "deny"
        key = _key(call)
        self._remembered.setdefault(key, {})[tool.name] = verdict
        # Calls to the same tool already waiting in the same session/run get the same answer.
        for other in list(self.pending.values()):
            if other.call.id != call.id and other.tool.name == tool.name and _key(other.call) == key \
                    and not other.future.done():
                self._settled_by_memory.add(other.call.id)
                other.future.set_result(Decision("once" if verdict == "allow" else "deny"))

    async def _refuse(self, call: ToolCall, tool: Tool, decision: str, decided_by: str,
                      started_at: float, message: str) -> ToolResult:
        return await self._finish(call, ToolResult.failure("denied", message), decision, decided_by, started_at)

    async def _execute(self, call: ToolCall, tool: Tool, ctx: ToolContext, decision: str, decided_by: str,
                       started_at: float, *, original_arguments: Mapping[str, Any] | None = None) -> ToolResult:
        # The decision is on disk before the tool runs; if it cannot be written, the tool does not run.
        try:
            audit_id = await asyncio.to_thread(
                self.audit.record, call, decision=decision, decided_by=decided_by, result=None,
                duration_s=None, started_at=started_at, original_arguments=original_arguments,
            )
        except SmoltuiError as error:
            log.error("audit write failed for %s: %s", call.tool, error)
            result = ToolResult.failure("failed", f"{call.tool} was not run: the audit log could not be written ({error})")
            self._publish(ToolCallFinished(call, result, decision, decided_by, None))
            return result
        result = await self.registry.call(tool.name, call.arguments, ctx)
        try:
            await asyncio.to_thread(self.audit.complete, audit_id, result)
        except SmoltuiError:
            log.exception("could not record the result of %s (audit row %s)", call.tool, audit_id)
        self._publish(ToolCallFinished(call, result, decision, decided_by, audit_id))
        return result

    async def _finish(self, call: ToolCall, result: ToolResult, decision: str, decided_by: str,
                      started_at: float, *, original_arguments: Mapping[str, Any] | None = None) -> ToolResult:
        """Record a call that did not run (refused or invalid), then publish it."""
        try:
            audit_id: int | None = await asyncio.to_thread(
                self.audit.record, call, decision=decision, decided_by=decided_by, result=result,
                duration_s=result.duration_s, started_at=started_at, original_arguments=original_arguments,
            )
        except SmoltuiError:
            log.exception("could not record the refused call to %s", call.tool)
            audit_id = None
        self._publish(ToolCallFinished(call, result, decision, decided_by, audit_id))
        return result

    def _record_quietly(self, call: ToolCall, decision: str, decided_by: str, started_at: float,
                        result: ToolResult) -> int | None:
        try:
            return self.audit.record(call, decision=decision, decided_by=decided_by, result=result,
                                     duration_s=0.0, started_at=started_at)
        except SmoltuiError:
            log.exception("could not record the cancelled call to %s", call.tool)
            return None

    def _publish(self, event: ApprovalNeeded | ToolCallFinished) -> None:
        if self.bus is not None:
            self.bus.publish(event)  # type: ignore[arg-type]


def _key(call: ToolCall) -> tuple[int | None, str | None]:
    return (call.session_id, call.run_id)
