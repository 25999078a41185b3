"""What the TUI needs to browse and run workflows, built in one place and handed to the screens.

One event bus carries everything the workflow views render: the runners' task and run events, the
gate's approval requests and finished calls, and :class:`RunFinished`. One gate asks the user about
every tool call of every run; ``pending_for`` tells a view which of those belong to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smoltui.backends.base import GenerationParams
from smoltui.orchestrator.approval import ApprovalGate, PendingApproval, Policy
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.events import EventBus
from smoltui.orchestrator.run_manager import BackendProvider, RunManager
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workflow_catalog import WorkflowCatalog, WorkflowFolder


@dataclass
class Workbench:
    run_store: RunStore
    catalog: WorkflowCatalog
    manager: RunManager
    gate: ApprovalGate
    bus: EventBus

    @classmethod
    def build(
        cls,
        store: Store,
        *,
        tools: Mapping[str, Any],
        policy: Policy,
        folders: Sequence[WorkflowFolder],
        backend: BackendProvider | None = None,
        params: GenerationParams | None = None,
        approval_timeout_s: float | None = None,
    ) -> Workbench:
        from smoltui.tools.registry import ToolRegistry

        run_store = RunStore(store)
        bus = EventBus()
        gate = ApprovalGate(ToolRegistry(tools.values()), policy, audit=AuditLog(store), bus=bus,
                            timeout_s=approval_timeout_s)
        manager = RunManager(run_store, gate=gate, bus=bus, backend=backend, params=params, tools=tools)
        catalog = WorkflowCatalog(list(folders), tools, run_store)
        return cls(run_store, catalog, manager, gate, bus)

    def pending_for(self, run_id: str | None = None) -> list[PendingApproval]:
        """Tool calls waiting for the user, oldest first (of one run, or of all runs)."""
        waiting = [p for p in self.gate.pending.values() if not p.future.done()]
        if run_id is not None:
            waiting = [p for p in waiting if p.call.run_id == run_id]
        return sorted(waiting, key=lambda p: p.created_at)
