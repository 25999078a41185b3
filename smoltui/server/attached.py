"""The TUI as a client of ``smoltui serve``: a core whose commands go to the server and whose events
come from it, with the attributes the screens use, so they work attached unchanged.

When a server runs for the home, :func:`smoltui.app.run_app` builds this instead of the core:

- **Reads** go to the same SQLite file the server writes (same machine, same home; the store is in
  WAL mode, so a second process reads safely), so chats, runs, tasks, logs and the audit trail are
  read exactly as in-process, and the watcher turns the server's run changes into bus events.
- **Commands** go through the server's API: sending a message and stopping its reply, launching,
  cancelling, resuming and retrying runs, answering approvals, creating, renaming and deleting
  chats, choosing a chat's tools, loading the model. The replies, runs and waiting calls are the
  server's: closing the TUI (a closed terminal, SIGHUP) never stops them.
- **Events**: the server's live stream (``GET /api/events``) is turned back into the core's event
  dataclasses and published on a local bus, so every screen subscribes to one bus as before.
  Calls waiting for approval are mirrored from that stream (fetched whole when it (re)connects), so
  ``gate.waiting()`` answers at once, as the screens expect.

The model is the server's: it is never loaded in the TUI's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smoltui.backends.base import GenerationStats, ToolCallDelta
from smoltui.config import Config
from smoltui.errors import SmoltuiError
from smoltui.orchestrator import events as ev
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.chat import ChatSettings
from smoltui.orchestrator.events import EventBus
from smoltui.orchestrator.run_manager import run_state_now
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.states import RunState
from smoltui.orchestrator.store import Session, Store
from smoltui.orchestrator.watcher import Watcher
from smoltui.orchestrator.workflow_catalog import WorkflowCatalog, default_folders
from smoltui.paths import Paths
from smoltui.server.client import ServerClient, ServerEvent
from smoltui.tools.base import Artifact, Tool, ToolResult
from smoltui.tools.calls import ApprovalRequest, Decision, ToolCall
from smoltui.tools.registry import ToolRegistry

if typing.TYPE_CHECKING:
    from smoltui.core import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""How long attaching waits for the server's event stream to open before giving up."""
CATCH_UP_TIMEOUT_S = 5.0
"""How long a finished reply waits for its last events to reach the local bus."""
FINISHED_KEPT = 2000


# -- events from the wire ----------------------------------------------------------------------------

_EVENT_TYPES: dict[str, type] = {}
for _name in dir(ev):
    _cls = getattr(ev, _name)
    if isinstance(_cls, type) and dataclasses.is_dataclass(_cls):
        _kind = next((f.default for f in dataclasses.fields(_cls) if f.name == "kind"), None)
        if isinstance(_kind, str):
            _EVENT_TYPES[_kind] = _cls


def event_from_wire(kind: str, data: Mapping[str, Any]) -> Any | None:
    """The core's event dataclass for one server-sent event (see :func:`smoltui.server.wire.event_data`);
    None for a kind this version does not know (a newer server)."""
    cls = _EVENT_TYPES.get(kind)
    if cls is None:
        return None
    if cls is ev.ApprovalNeeded:
        return ev.ApprovalNeeded(request_from_wire(data["request"]))
    if cls is ev.ToolCallFinished:
        return ev.ToolCallFinished(_call(data["call"]), _result(data["result"]), data["decision"],
                                   data["decided_by"], data.get("audit_id"))
    if cls is ev.ReplyFinished:
        stats = GenerationStats(**{f.name: data["stats"][f.name] for f in dataclasses.fields(GenerationStats)
                                   if f.name in data["stats"]})
        calls = tuple(ToolCallDelta(**{k: v for k, v in c.items() if k != "kind"}) for c in data.get("tool_calls", ()))
        return ev.ReplyFinished(data["session_id"], data["message_id"], data["content"], data["thinking"],
                                stats, calls)
    values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name != "kind" and f.name in data}
    if cls is ev.RunsChanged:
        values["run_ids"] = tuple(values.get("run_ids", ()))
    return cls(**values)


def request_from_wire(data: Mapping[str, Any]) -> ApprovalRequest:
    """An approval as ``/api/approvals`` and the ``approval_needed`` event write it (flat)."""
    call = ToolCall(data["call_id"], data["tool"], dict(data.get("arguments") or {}), data.get("session_id"),
                    data.get("run_id"), data.get("task_id"))
    return ApprovalRequest(call, data.get("risk", ""), data.get("origin", ""), data.get("description", ""),
                           float(data.get("asked_at") or 0.0))


def _call(data: Mapping[str, Any]) -> ToolCall:
    return ToolCall(data["id"], data["tool"], dict(data.get("arguments") or {}), data.get("session_id"),
                    data.get("run_id"), data.get("task_id"))


def _result(data: Mapping[str, Any]) -> ToolResult:
    artifacts = tuple(Artifact(a["kind"], Path(a["path"]), "", a.get("summary", "")) for a in data.get("artifacts", ()))
    return ToolResult(bool(data.get("ok")), data.get("content"), data.get("error"), data.get("error_kind"),
                      artifacts, float(data.get("duration_s") or 0.0))


# -- the connection ----------------------------------------------------------------------------------


class Attachment:
    """The server's event stream, turned into local bus events; the waiting calls and the runs the
    server drives, mirrored from it."""

    def __init__(self, client: ServerClient, bus: EventBus) -> None:
        self.client = client
        self.bus = bus
        self.waiting: dict[str, ApprovalRequest] = {}
        self.running: set[str] = set()
        """Runs the server drives now."""
        self.state = "connecting"
        """``connected`` or ``reconnecting`` (the status bar says so)."""
        self.on_state: Callable[[str], None] | None = None
        self.on_problem: Callable[[str], None] | None = None
        """Told when a command sent in the background was refused (the app notifies)."""
        self.server_pid: int | None = None
        """The server's pid, as its last answer says (a restarted server has a new one)."""
        self.model_info: dict[str, Any] = {}
        self.model_ready = asyncio.Event()
        self.last_published: int = 0
        self._catching_up: list[tuple[int, asyncio.Future[None]]] = []
        self._finished: dict[str, None] = {}
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._added_while_refreshing: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Follow the stream; returns once it is open and the waiting calls are known."""
        self._task = asyncio.create_task(self._follow(), name="smoltui attached events")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
            if self._refresh is not None:
                await self._refresh
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._refresh, *self._background) if t is not None]
        self._task = self._refresh = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # -- the stream ------------------------------------------------------------------------------

    def _state(self, state: str, delay: float) -> None:
        if state == "connected":
            # From now on every event is in the stream: what happened while it was down (or before
            # it opened) is fetched whole.
            self._refresh = asyncio.ensure_future(self.refresh())
            self._connected.set()
        if state != self.state:
            self.state = state
            self._tell_state()

    def _tell_state(self) -> None:
        if self.on_state is not None:
            self.on_state(self.state)

    async def _follow(self) -> None:
        async for item in self.client.events(on_state=self._state):
            try:
                self._receive(item)
            except Exception:  # one odd event must not end the stream
                log.exception("an event from the server could not be read: %s", item.kind)

    def _receive(self, item: ServerEvent) -> None:
        if item.kind == "gap":
            self._refresh = asyncio.ensure_future(self.refresh())
            return
        event = event_from_wire(item.kind, item.data)
        if event is not None:
            try:
                self._mirror(event)
            except Exception:  # the screens still hear of it
                log.exception("mirroring %s failed", item.kind)
            self.bus.publish(event)
        if item.id is not None:
            self.last_published = max(self.last_published, item.id)
            self._wake()

    def _wake(self) -> None:
        if not self._catching_up:
            return
        still = []
        for event_id, future in self._catching_up:
            if event_id <= self.last_published:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((event_id, future))
        self._catching_up = still

    async def caught_up(self, event_id: int, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Until the event ``event_id`` (or a later one) has been published on the local bus (at
        most ``timeout_s``: a stream that is down must not hold a screen up)."""
        if event_id <= self.last_published:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._catching_up.append((event_id, future))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, timeout_s)

    def _mirror(self, event: Any) -> None:
        """Keep the mirrors true before the screens hear of the event (they read them at once)."""
        match event:
            case ev.ApprovalNeeded():
                if event.call.id not in self._finished:
                    self.waiting[event.call.id] = event.request
                    self._added_while_refreshing.add(event.call.id)
            case ev.ToolCallFinished():
                self._forget_call(event.call.id)
            case ev.ToolCallDone():
                self._forget_call(event.call_id)
            case ev.RunStateChanged() | ev.RunFinished():
                if RunState(event.state).active and not isinstance(event, ev.RunFinished):
                    self.running.add(event.run_id)
                else:
                    self.running.discard(event.run_id)
                    # A run that ended takes its waiting calls with it, unanswered.
                    for call_id in [i for i, r in self.waiting.items() if r.call.run_id == event.run_id]:
                        self._forget_call(call_id)
            case ev.ModelReady():
                self.model_info.update(ready=True, error=None, name=event.model_name, backend=event.backend,
                                       context_size=event.context_size)
                self.model_ready.set()
            case ev.ModelFailed():
                self.model_info.update(ready=False, error=event.message)

    def set_model(self, info: Mapping[str, Any]) -> None:
        self.model_info.update(info)
        if info.get("ready"):
            self.model_ready.set()
        elif "ready" in info:  # a restarted server loads its model again, on first need
            self.model_ready.clear()

    def _forget_call(self, call_id: str) -> None:
        self.waiting.pop(call_id, None)
        self._finished[call_id] = None
        while len(self._finished) > FINISHED_KEPT:
            self._finished.pop(next(iter(self._finished)))

    async def refresh(self) -> None:
        """Fetch the waiting calls and the runs the server drives anew (at each (re)connection)."""
        self._added_while_refreshing = set()
        try:
            health = await self.client.health()
            answer = await self.client.approvals()
        except SmoltuiError as error:
            log.info("refreshing from the server failed: %s", error)
            return
        self.server_pid = health.get("pid")
        self.set_model(health.get("model") or {})
        self.running = set(health.get("runs_active") or ())
        fresh = {r.call.id: r for r in map(request_from_wire, answer) if r.call.id not in self._finished}
        for call_id in self._added_while_refreshing:
            if call_id in self.waiting:
                fresh.setdefault(call_id, self.waiting[call_id])
        gone = {r.call.run_id for i, r in self.waiting.items() if i not in fresh and r.call.run_id}
        self.waiting = fresh
        self._tell_state()  # the status bar names the server it now reaches
        if gone:  # run views read again and drop the cards of calls no longer waiting
            self.bus.publish(ev.RunsChanged(tuple(sorted(gone))))

    # -- commands sent in the background ---------------------------------------------------------

    def command(self, coroutine: typing.Coroutine[Any, Any, Any], what: str) -> None:
        """Send a command whose answer nobody waits for (a screen asked synchronously); a refusal
        is told through ``on_problem``."""

        async def send() -> None:
            try:
                await coroutine
            except SmoltuiError as error:
                log.info("%s: %s", what, error)
                if self.on_problem is not None:
                    self.on_problem(f"{what}: {error}")

        self._spawn(send())

    def _spawn(self, coroutine: typing.Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


# -- the facades --------------------------------------------------------------------------------------


@dataclass
class RemoteBackend:
    """What the screens read of the server's backend (its name, its context)."""

    name: str
    model_name: str
    context_size: int


class AttachedModel:
    """The server's model: its state as the server says, loaded by the server."""

    def __init__(self, attachment: Attachment) -> None:
        self._attachment = attachment
        self.holder: str | None = None

    @property
    def ready(self) -> asyncio.Event:
        return self._attachment.model_ready

    @property
    def _info(self) -> dict[str, Any]:
        return self._attachment.model_info

    @property
    def label(self) -> str:
        return str(self._info.get("label") or self._info.get("name") or "the server's model")

    @property
    def available(self) -> bool:
        return self._info.get("backend") is not None

    @property
    def load_error(self) -> str | None:
        error = self._info.get("error")
        return str(error) if error else None

    @property
    def settled(self) -> bool:
        return self.ready.is_set() or self.load_error is not None

    @property
    def backend(self) -> RemoteBackend | None:
        if not self.available:
            return None
        info = self._info
        return RemoteBackend(str(info.get("backend") or ""), str(info.get("name") or self.label),
                             int(info.get("context_size") or 0))

    async def load(self) -> bool:
        """Ask the server to load its model (as the in-process TUI loads it at start)."""
        try:
            info = await self._attachment.client.load_model()
        except SmoltuiError as error:
            self._info.setdefault("error", str(error))
            return False
        self._attachment.set_model(info)
        return bool(info.get("ready"))

    async def close(self) -> None:
        """The model is the server's: nothing to release here."""


class AttachedGate:
    """The server's approval gate: the waiting calls as mirrored, answers sent to the server."""

    def __init__(self, attachment: Attachment, registry: ToolRegistry, audit: AuditLog) -> None:
        self._attachment = attachment
        self.registry = registry
        self.audit = audit

    def waiting(self, *, run_id: str | None = None, session_id: int | None = None) -> list[ApprovalRequest]:
        found = list(self._attachment.waiting.values())
        if run_id is not None:
            found = [r for r in found if r.call.run_id == run_id]
        if session_id is not None:
            found = [r for r in found if r.call.session_id == session_id]
        return sorted(found, key=lambda r: r.asked_at)

    def is_waiting(self, call_id: str) -> bool:
        return call_id in self._attachment.waiting

    def answer(self, call_id: str, decision: Decision) -> bool:
        """Send the answer to the server; False when the call no longer waits as far as this client
        knows. Answered elsewhere first, the server refuses this one and the first answer stands;
        either way the server's ``tool_call_finished`` takes the card away."""
        if call_id not in self._attachment.waiting:
            return False
        client = self._attachment.client
        self._attachment.command(client.answer(call_id, decision.kind, reason=decision.reason,
                                               arguments=decision.arguments), "the answer was not taken")
        return True


class AttachedChat:
    """The server's chat service: a message is sent to the server, which writes the reply (it goes
    on when this client goes away); its events arrive through the bus like any other."""

    def __init__(self, attachment: Attachment, model: AttachedModel, store: AttachedStore, gate: AttachedGate,
                 settings: ChatSettings) -> None:
        self._attachment = attachment
        self.model = model
        self.store = store
        self.gate = gate
        self.settings = settings
        self.bus = attachment.bus
        self._replying: int | None = None

    @property
    def ready(self) -> asyncio.Event:
        return self.model.ready

    @property
    def load_error(self) -> str | None:
        return self.model.load_error

    @property
    def backend(self) -> RemoteBackend:
        backend = self.model.backend
        assert backend is not None, "a chat service needs a model"
        return backend

    @property
    def busy(self) -> bool:
        return self._replying is not None

    def file_roots(self, session_id: int) -> tuple[Path, ...]:
        """The server writes a chat's artifacts beside the database this client shares (its
        workspace is the server's: not known here)."""
        return (Path(self.store.path).parent / "chat-artifacts" / str(session_id),)

    def cancel(self) -> bool:
        """Stop the reply this client asked for (the server keeps what it wrote)."""
        session_id = self._replying
        if session_id is None:
            return False
        self._attachment.command(self._attachment.client.cancel_reply(session_id), "the reply was not stopped")
        return True

    async def stop(self) -> None:
        """A closing client stops nothing: the reply is the server's."""

    def available_tools(self) -> list[Tool]:
        return list(self.gate.registry.tools)

    async def session_tools(self, session_id: int) -> list[Tool]:
        names = await self.store.session_tools(session_id)
        return [tool for name in names if (tool := self.gate.registry.get(name)) is not None]

    async def set_session_tools(self, session_id: int, names: Sequence[str]) -> None:
        await self._attachment.client.update_chat(session_id, tools=list(names))

    async def send(self, session_id: int, text: str, *, think: bool | None = None) -> ev.ReplyFinished | None:
        """Send ``text`` and follow the reply to its end; None if it failed (a ``reply_failed``
        event says why). Returns once the reply's events have reached the local bus."""
        last_id = 0
        outcome: dict[str, Any] | None = None
        finished: ev.ReplyFinished | None = None
        self._replying = session_id
        try:
            async for item in self._attachment.client.send(session_id, text, think=think):
                if item.id is not None:
                    last_id = max(last_id, item.id)
                if item.kind == "reply_finished":
                    finished = event_from_wire(item.kind, item.data)
                elif item.kind == "done":
                    outcome = item.data
                    break
        finally:
            self._replying = None
        await self._attachment.caught_up(last_id)
        if outcome is None:
            raise SmoltuiError("the server ended the reply's stream early; the reply goes on there")
        return finished if outcome.get("ok") else None


class AttachedRuns:
    """The server's run manager: runs are launched, cancelled, resumed and retried there."""

    def __init__(self, attachment: Attachment, run_store: RunStore) -> None:
        self._attachment = attachment
        self.run_store = run_store
        self.active: dict[str, Any] = {}
        """Runs this process drives: none, attached (quitting cancels nothing)."""

    def is_running(self, run_id: str) -> bool:
        """The server drives the run now."""
        return run_id in self._attachment.running

    async def launch(self, file: Path | str, variables: Mapping[str, Any] | None = None, *,
                     concurrency: int | None = None, workspace: Path | None = None) -> str:
        run = await self._attachment.client.launch(Path(file).resolve(), variables=dict(variables or {}),
                                                   concurrency=concurrency, workspace=workspace)
        self._attachment.running.add(run["id"])
        return str(run["id"])

    async def resume(self, run_id: str, *, retry: Sequence[str] | None = None, **_: Any) -> None:
        await self._attachment.client.resume(run_id, retry=retry)
        self._attachment.running.add(run_id)

    async def retry_task(self, run_id: str, task_id: str) -> None:
        await self._attachment.client.retry_task(run_id, task_id)
        self._attachment.running.add(run_id)

    def cancel(self, run_id: str) -> bool:
        if not self.is_running(run_id):
            return False
        self._attachment.command(self._attachment.client.cancel_run(run_id), f"run {run_id} was not cancelled")
        return True

    async def interrupted(self) -> list[str]:
        return [record.id for record in await self.run_store.list_runs(active=True)
                if run_state_now(record) is RunState.INTERRUPTED]

    async def shutdown(self) -> None:
        """The runs are the server's: a client that goes away never stops one."""


class AttachedStore:
    """The shared store, read directly; the changes a server must know of (a chat made, renamed or
    deleted) go through it, everything else is the local store's."""

    def __init__(self, store: Store, client: ServerClient) -> None:
        self._store = store
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def create_session(self, title: str = "New chat", model: str | None = None) -> Session:
        made = await self._client.create_chat(title)
        return await self._store.get_session(int(made["id"]))

    async def rename_session(self, session_id: int, title: str) -> Session:
        await self._client.update_chat(session_id, title=title)
        return await self._store.get_session(session_id)

    async def delete_session(self, session_id: int) -> None:
        await self._client.delete_chat(session_id)


# -- the core --------------------------------------------------------------------------------------


@dataclass
class AttachedCore:
    """What :class:`smoltui.core.Core` offers the TUI, over a running server."""

    settings: Settings
    client: ServerClient
    attachment: Attachment
    local_store: Store
    store: AttachedStore
    bus: EventBus
    model: AttachedModel
    tools: ToolRegistry
    gate: AttachedGate
    chat: AttachedChat
    runs: AttachedRuns
    catalog: WorkflowCatalog
    watcher: Watcher
    problems: list[str] = field(default_factory=list)
    attached: bool = True

    @property
    def config(self) -> Config:
        return self.settings.config

    @property
    def paths(self) -> Paths:
        return self.settings.paths

    @property
    def run_store(self) -> RunStore:
        return self.runs.run_store

    @property
    def headless(self) -> bool:
        return False

    @property
    def server_pid(self) -> int | None:
        return self.attachment.server_pid

    @property
    def where(self) -> str:
        """What the status bar names: the server this TUI is attached to."""
        pid = self.server_pid
        return f"attached to smoltui serve (pid {pid})" if pid else "attached to smoltui serve"

    async def start_tools(self) -> list[str]:
        """MCP servers are the server's; nothing starts here."""
        return []

    def offered_tools(self) -> list[Tool]:
        return list(self.tools.tools)

    def workflow_folder(self) -> Path:
        return self.paths.workflows_dir

    async def close(self, *, cancel_runs: bool = True) -> None:
        """Let go of the server (its replies and runs go on) and of the local store."""
        await self.watcher.stop()
        await self.attachment.stop()
        await self.client.aclose()
        await self.local_store.close()


async def open_attached(settings: Settings, client: ServerClient) -> AttachedCore:
    """Attach to the server ``client`` reaches: the store opened for reading, the event stream
    open and the waiting calls known. ServerUnavailable (or ApiError) when it does not answer."""
    from smoltui.core import build_tool_registry, chat_settings

    health = await client.health()
    store = await Store.open(settings.paths.database)
    attachment: Attachment | None = None
    try:
        config = settings.config
        bus = EventBus()
        attachment = Attachment(client, bus)
        attachment.server_pid = health.get("pid")
        attachment.set_model(health.get("model") or {})
        attachment.running = set(health.get("runs_active") or ())
        await attachment.start()
        problems: list[str] = []
        tools = build_tool_registry(config, problems)
        run_store = RunStore(store)
        gate = AttachedGate(attachment, tools, AuditLog(store))
        model = AttachedModel(attachment)
        shared = AttachedStore(store, client)
        chat = AttachedChat(attachment, model, shared, gate, chat_settings(config))
        folders = default_folders(settings.project_dir, settings.paths.workflows_dir, config.workflows.paths)
        catalog = WorkflowCatalog(folders, tools, run_store)
        watcher = Watcher(run_store, catalog, bus)
        return AttachedCore(settings, client, attachment, store, shared, bus, model, tools, gate, chat,
                            AttachedRuns(attachment, run_store), catalog, watcher, problems)
    except BaseException:
        if attachment is not None:
            await attachment.stop()
        await store.close()
        raise


__all__ = ["AttachedCore", "event_from_wire", "open_attached", "request_from_wire"]
