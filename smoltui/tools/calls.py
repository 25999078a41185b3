"""The words of a tool call and its approval: a call, a risk, a mode, a decision and the policy.

A leaf module (it imports only :mod:`smoltui.errors`), so the approval gate, the audit trail, the config
and every front end can share these words without importing each other.

A :class:`Policy` turns (tool, risk) into a :data:`Mode`. It is the config's ``[approval]`` rules
plus, for a front end with nobody to ask, what its ``--approve`` flag allows. The flag only ever
settles what the rules would *ask* about: a tool the rules deny stays denied, a tool they run
stays run, whatever the flag says. So the same config and flags decide the same way in the TUI,
``chat``, ``run``, ``resume``, ``tools run`` and the planner.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from smoltui.errors import ConfigError

Risk = Literal["read", "write", "execute", "network"]
RISKS: tuple[Risk, ...] = ("read", "write", "execute", "network")

Mode = Literal["auto", "ask", "deny"]
DecisionKind = Literal["once", "always", "deny", "always_deny", "edit"]
DECISION_KINDS: tuple[str, ...] = ("once", "always", "deny", "always_deny", "edit")

DEFAULT_RISK_MODES: dict[str, Mode] = {"read": "auto", "write": "ask", "execute": "ask", "network": "ask"}

APPROVE_FLAG_HELP = (
    "headless approvals, for calls the config would ask about: none (refuse them; the default), "
    "all, read (read-only tools only), or TOOL[,TOOL...]; a tool the config denies stays denied"
)
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


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
    """The user's answer. ``edit`` carries the arguments to run instead of the proposed ones;
    ``reason`` (deny only) is told to the model."""

    kind: DecisionKind
    arguments: dict[str, Any] | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DECISION_KINDS:
            raise ValueError(f"decision must be one of {', '.join(DECISION_KINDS)}, not {self.kind!r}")
        if self.kind == "edit" and self.arguments is None:
            raise ValueError("an 'edit' decision needs the edited arguments")

    @property
    def allows(self) -> bool:
        return self.kind in ("once", "always", "edit")


@dataclass(frozen=True)
class ApproveFlag:
    """What ``--approve`` allows among the calls the rules would ask about."""

    everything: bool = False
    risks: frozenset[str] = frozenset()
    tools: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, flag: str | None, known_tools: Collection[str] | None = None) -> ApproveFlag:
        """``none``, ``all``, ``read`` or ``TOOL[,TOOL...]``; anything else is a ConfigError."""
        value = (flag if flag is not None else "none").strip()
        if value == "none":
            return cls()
        if value == "all":
            return cls(everything=True)
        if value == "read":
            return cls(risks=frozenset({"read"}))
        names = [part.strip() for part in value.split(",")]
        bad = [name for name in names if not _TOOL_NAME.match(name)]
        if not value or bad:
            shown = repr(flag) if not value else ", ".join(repr(n) for n in bad)
            raise ConfigError(f"--approve: {shown} is not a valid value; use none, all, read, or TOOL[,TOOL...]")
        if known_tools is not None:
            unknown = [name for name in names if name not in known_tools]
            if unknown:
                known = ", ".join(sorted(known_tools)) or "none"
                raise ConfigError(f"--approve: no tool named {', '.join(map(repr, unknown))} (tools: {known})")
        return cls(tools=frozenset(names))

    def allows(self, name: str, risk: str) -> bool:
        return self.everything or risk in self.risks or name in self.tools


class Policy(BaseModel):
    """Which tool calls run, ask, or are refused: the config's ``[approval]`` section.

    ``defaults`` maps each risk to a mode (missing risks keep the built-in default); ``tools`` maps
    a tool name to a mode and wins over its risk's default. A policy made for a front end with
    nobody to ask (:meth:`from_approve_flag`, :meth:`headless`) never answers ``ask``.
    """

    model_config = ConfigDict(extra="forbid")

    defaults: dict[Risk, Mode] = Field(default_factory=lambda: dict(DEFAULT_RISK_MODES))
    tools: dict[str, Mode] = Field(default_factory=dict, description="tool name -> auto, ask or deny")
    _approve: ApproveFlag | None = PrivateAttr(None)

    @field_validator("defaults")
    @classmethod
    def _fill_defaults(cls, value: dict[Risk, Mode]) -> dict[Risk, Mode]:
        return {**DEFAULT_RISK_MODES, **value}  # type: ignore[dict-item]

    @property
    def asks(self) -> bool:
        """Whether a call can end up asking a person (False for a headless policy)."""
        return self._approve is None

    def rule(self, name: str, risk: str) -> Mode:
        """What the rules alone say: the tool's override, else its risk's default."""
        override = self.tools.get(name)
        if override is not None:
            return override
        return self.defaults.get(risk, "ask")  # type: ignore[call-overload]

    def mode(self, name: str, risk: str) -> Mode:
        """The decision for a call to ``name`` at ``risk``; a headless policy resolves every ask."""
        mode = self.rule(name, risk)
        if mode != "ask" or self._approve is None:
            return mode
        return "auto" if self._approve.allows(name, risk) else "deny"

    def decide(self, tool: Any) -> Mode:
        """The mode for a tool at its declared risk (anything with ``name`` and ``risk``)."""
        return self.mode(tool.name, tool.risk)

    def headless(self) -> Policy:
        """The same rules with nobody to ask: every ``ask`` becomes ``deny``."""
        return self.with_approvals(ApproveFlag())

    def with_approvals(self, flag: ApproveFlag) -> Policy:
        policy = self.model_copy(deep=True)
        policy._approve = flag
        return policy

    @classmethod
    def from_approve_flag(
        cls, flag: str | None, base: Policy | None = None, *, known_tools: Collection[str] | None = None
    ) -> Policy:
        """The policy for a headless front end's ``--approve`` value over the rules in ``base``.

        - ``none``: every ask is refused;
        - ``all``: every ask runs;
        - ``read``: asks about read-risk tools run, the others are refused;
        - ``TOOL[,TOOL...]``: asks about those tools run, the others are refused.

        Whatever the flag, a call the rules deny is refused and a call they run, runs.
        ``known_tools``, when given, makes an unknown tool name an error.
        """
        return (base or cls()).with_approvals(ApproveFlag.parse(flag, known_tools))


@dataclass(frozen=True)
class ApprovalRequest:
    """A call waiting for a person's answer: what a card shows (plain data, so it can travel)."""

    call: ToolCall
    risk: str
    origin: str
    description: str
    asked_at: float

    @property
    def where(self) -> str:
        call = self.call
        if call.run_id and call.task_id:
            return f"task {call.task_id} of run {call.run_id}"
        if call.run_id:
            return f"run {call.run_id}"
        return "in the chat"
