"""The composition root: builds ONE core for any front end, and is the only module that knows every layer.

A :class:`Core` is everything smoltui is, minus a screen: the config, the store, one event bus, the
model (resolved now, loaded on first need), one tool registry (built-ins, the seed's tools, plugins
and MCP servers), one approval policy and gate, the chat service, the run manager and the workflow
catalog. The TUI and every CLI command get their pieces from here, so what one front end can do,
every front end can do, with the same tools and the same decisions.

    core = await open_core(Settings.from_config(config, paths, approve=args.approve))
    try:
        ...
    finally:
        await core.close()
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smoltui.config import Config
from smoltui.errors import ConfigError, ModelError, SmoltuiError
from smoltui.orchestrator.approval import ApprovalGate
from smoltui.orchestrator.audit import AuditLog
from smoltui.orchestrator.chat import ChatService, ChatSettings
from smoltui.orchestrator.events import EventBus, ToolsChanged
from smoltui.orchestrator.model import Model
from smoltui.orchestrator.run_manager import RunManager
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.watcher import Watcher
from smoltui.orchestrator.workflow_catalog import WorkflowCatalog, WorkflowFolder, default_folders
from smoltui.paths import Paths
from smoltui.tools.calls import Policy
from smoltui.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from smoltui.backends.base import Backend, GenerationParams
    from smoltui.backends.models import ModelRef
    from smoltui.orchestrator.planner import Planner
    from smoltui.tools.base import Tool
    from smoltui.tools.mcp_client import MCPHub

log = logging.getLogger("smoltui")

OPENAI_SERVER_DEFAULT = "(server default)"


@dataclass(frozen=True)
class Settings:
    """What a front end says about the core it wants (the rest comes from the config)."""

    config: Config
    paths: Paths
    model_spec: str | None = None
    """``--model``; None: the config's default, else the bundled model."""
    approve: str | None = None
    """A headless front end's ``--approve`` (None: a person is there to ask: the TUI)."""
    workspace: Path | None = None
    """The folder chat tools work in (default: ``[tools] workspace``, else the current folder)."""
    project_dir: Path = field(default_factory=Path.cwd)
    """Where the project's ``workflows/`` folder is looked for."""
    log_to_file: bool = True


@dataclass
class Core:
    settings: Settings
    store: Store
    bus: EventBus
    model: Model
    tools: ToolRegistry
    mcp: MCPHub
    policy: Policy
    gate: ApprovalGate
    chat: ChatService
    runs: RunManager
    catalog: WorkflowCatalog
    watcher: Watcher
    """Started by a front end that shows runs (the TUI): other processes' changes reach the bus."""
    problems: list[str]
    """Warnings worth one line each (a plugin that failed, an MCP server that did not start)."""
    _tools_started: bool = False

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
        return not self.policy.asks

    # -- tools -----------------------------------------------------------------------------------

    async def start_tools(self) -> list[str]:
        """Start the MCP servers (once per process) and add their tools. The first call returns
        every tool problem worth a warning (a plugin that failed to load, a server that did not
        start), so a front end says each once; later calls return nothing."""
        if self._tools_started:
            return []
        self._tools_started = True
        await self.mcp.start()
        problems = list(self.mcp.problems)
        for origin, tools in self.mcp.tools_by_origin().items():
            problems.extend(self.tools.replace_origin(origin, tools))
        self.problems.extend(problems)
        self._check_approval_names()
        if self.mcp.servers:
            self.catalog.revalidate()
            self.bus.publish(ToolsChanged("mcp"))
        if self.settings.approve is not None:
            # Only now are the names of MCP tools known.
            headless_policy(self.config, self.settings.approve, self.tools)
        return list(self.problems)

    def _tools_changed(self, origin: str, tools: list[Tool]) -> None:
        for problem in self.tools.replace_origin(origin, tools):
            log.warning("%s", problem)
        self.catalog.revalidate()
        self.bus.publish(ToolsChanged(origin))

    def _check_approval_names(self) -> None:
        unknown = sorted(name for name in self.config.approval.tools if name not in self.tools)
        if unknown:
            log.warning("[approval] names unknown tools: %s", ", ".join(unknown))

    def select_tools(self, spec: str) -> list[str]:
        """``--tools a,b`` or ``all`` as tool names; an unknown name is a ConfigError."""
        available = sorted(self.tools.names())
        wanted = available if spec.strip() == "all" else [t.strip() for t in spec.split(",") if t.strip()]
        unknown = [name for name in wanted if name not in self.tools]
        if unknown or not wanted:
            raise ConfigError(f"--tools: no tool named {', '.join(map(repr, unknown)) or repr(spec)} "
                              f"(tools: {', '.join(available)})")
        return wanted

    def offered_tools(self) -> list[Tool]:
        """The tools a chat or the planner may offer the model: every tool the policy does not deny."""
        return [tool for tool in self.tools.tools if self.policy.decide(tool) != "deny"]

    # -- workflows -------------------------------------------------------------------------------

    def planner(self, backend: Backend, *, max_tokens: int | None = None) -> Planner:
        from smoltui.orchestrator.planner import MAX_TOKENS, TEMPERATURE, Planner

        c = self.config.chat
        params = chat_params(self.config, max_tokens=max_tokens or MAX_TOKENS)
        params = _replace(params, temperature=min(c.temperature, TEMPERATURE))
        return Planner(backend, {t.name: t for t in self.offered_tools()}, params=params)

    def workflow_folder(self) -> Path:
        """Where the planner saves: the user's own workflow folder."""
        return self.paths.workflows_dir

    # -- life ------------------------------------------------------------------------------------

    async def close(self, *, cancel_runs: bool = True) -> None:
        """Stop what this process drives (runs are recorded as cancelled, resumable), then release
        the model, the MCP servers and the store."""
        await self.watcher.stop()
        if cancel_runs:
            await self.runs.shutdown()
        await self.chat.stop()  # a reply in progress keeps what it said, marked cut off
        try:
            await self.model.close()
        except Exception:  # closing must not turn a clean exit into a traceback
            log.exception("closing the backend failed")
        try:
            await self.mcp.close()
        except Exception:
            log.exception("closing the MCP servers failed")
        await self.store.close()


async def open_core(settings: Settings, *, store: Store | None = None, backend: Backend | None = None) -> Core:
    """Open the store and build the core once. ``store`` and ``backend`` replace the configured
    ones (the TUI's fallback store, tests, the bench).

    Nothing slow happens here: the model is resolved but not loaded, MCP servers are not started
    (:meth:`Core.start_tools`), and a missing model leaves a core whose model says why.
    """
    if settings.approve is not None:
        headless_policy(settings.config, settings.approve)  # a bad flag is refused before a file is made
    if settings.log_to_file:
        setup_logging(settings.paths)
    if store is None:
        store = await Store.open(settings.paths.database)
    try:
        return build_core(settings, store=store, backend=backend)
    except BaseException:
        await store.close()
        raise


def build_core(settings: Settings, *, store: Store, backend: Backend | None = None) -> Core:
    """The core over an open store (see :func:`open_core`)."""
    config, paths = settings.config, settings.paths
    bus = EventBus()
    problems: list[str] = []
    tools = build_tool_registry(config, problems)
    # The flag's syntax is checked now (before any model loads); its tool names once MCP tools are in.
    policy = headless_policy(config, settings.approve) if settings.approve is not None else config.approval
    audit = AuditLog(store)
    timeout = 0 if settings.approve is not None else config.workflows.approval_timeout_s
    gate = ApprovalGate(tools, policy, audit=audit, bus=bus, timeout_s=timeout)
    model = _build_model(config, paths, settings.model_spec, bus, backend)
    workspace = settings.workspace or _configured_workspace(config)
    chat = ChatService(model, store, chat_settings(config), bus=bus, gate=gate, workspace=workspace)
    run_store = RunStore(store)
    runs = RunManager(run_store, gate=gate, bus=bus, model=model, params=chat_params(config), tools=tools)
    folders = default_folders(settings.project_dir, paths.workflows_dir, config.workflows.paths)
    catalog = WorkflowCatalog(folders, tools, run_store)
    from smoltui.tools.mcp_client import MCPHub

    watcher = Watcher(run_store, catalog, bus)
    core = Core(settings, store, bus, model, tools, MCPHub(config.mcp.servers), policy, gate, chat, runs,
                catalog, watcher, problems)
    core.mcp.on_change = core._tools_changed
    return core


# -- the pieces ------------------------------------------------------------------------------------


def build_tool_registry(config: Config, problems: list[str] | None = None) -> ToolRegistry:
    """Built-ins, the seed's tool names and entry-point plugins (MCP tools join when started)."""
    from smoltui.tools.builtins import builtin_tools
    from smoltui.tools.seed_compat import seed_tools

    web = {"web_allow": config.tools.web_allow, "web_deny": config.tools.web_deny,
           "web_allow_networks": config.tools.web_allow_networks,
           "web_allow_private_hosts": config.tools.web_allow_private_hosts}
    registry = ToolRegistry(builtin_tools(**web))
    for item in seed_tools(**web):
        registry.register(item)
    found = registry.load_entry_points()
    if problems is not None:
        problems.extend(found)
    return registry


def headless_policy(config: Config, approve: str | None, tools: ToolRegistry | None = None) -> Policy:
    """The config's rules with ``--approve`` settling what they would ask about (ConfigError on a
    bad value)."""
    known = None if tools is None else set(tools.names())
    return Policy.from_approve_flag(approve or "none", config.approval, known_tools=known)


def chat_params(config: Config, *, think: bool | None = None, max_tokens: int | None = None) -> GenerationParams:
    from smoltui.backends.base import GenerationParams

    c = config.chat
    return GenerationParams(
        max_tokens=max_tokens or c.max_tokens,
        temperature=c.temperature,
        top_p=c.top_p,
        top_k=c.top_k,
        repeat_penalty=c.repeat_penalty,
        seed=c.seed,
        think=c.think if think is None else think,
    )


def chat_settings(config: Config, *, system: str | None = None, think: bool | None = None,
                  max_tokens: int | None = None) -> ChatSettings:
    params = chat_params(config, think=think, max_tokens=max_tokens)
    return ChatSettings(system_prompt=config.chat.system_prompt if system is None else system, params=params)


def _replace(params: GenerationParams, **changes: Any) -> GenerationParams:
    from dataclasses import replace

    return replace(params, **changes)


def _configured_workspace(config: Config) -> Path:
    return Path(config.tools.workspace).expanduser().resolve() if config.tools.workspace else Path.cwd().resolve()


def _build_model(config: Config, paths: Paths, model_spec: str | None, bus: EventBus,
                 backend: Backend | None) -> Model:
    if backend is not None:
        return Model(backend, bus, label=backend.model_name)
    label = model_spec or config.model.default or "bundled model"
    try:
        ref, built = resolve_and_build(config, paths, model_spec)
    except SmoltuiError as error:
        return Model(None, bus, label=label, error=error)
    except ImportError as error:
        # A backend whose runtime is not installed (e.g. llama-cpp-python): keep history usable.
        log.exception("building the backend failed")
        return Model(None, bus, label=label,
                     error=ModelError(f"the model runtime is not installed: {error}; install smoltui[cpu]"))
    return Model(built, bus, label=ref.label)


def resolve_and_build(config: Config, paths: Paths, model_spec: str | None) -> tuple[ModelRef, Backend]:
    """Pick the model (flag, then config, then bundled) and build the backend that runs it."""
    from smoltui.backends.models import SCRIPTED, ModelRef, resolve_model

    backend = config.model.backend
    if backend == "openai" and model_spec != SCRIPTED:
        # The model is the server's id (the config's [model] default is a local file for llama.cpp).
        model = model_spec or config.openai.model or ""
        ref = ModelRef(model or OPENAI_SERVER_DEFAULT, "remote", None)  # type: ignore[arg-type]
    elif backend == "transformers" and (model_spec or config.model.default) != SCRIPTED:
        target = model_spec or config.model.default
        if not target:
            raise ModelError("the transformers backend needs a model: --model FOLDER or a hub id "
                             "(HuggingFaceTB/SmolLM3-3B), or [model] default in the config")
        folder = Path(target).expanduser()
        ref = ModelRef(target, "path", folder) if folder.is_dir() else ModelRef(target, "hf-cache", None)
    else:
        search = [paths.models_dir, *(Path(p) for p in config.model.search_paths)]
        ref = resolve_model(model_spec or config.model.default, search)
    return ref, build_backend(ref, config, paths)


def build_backend(ref: ModelRef, config: Config, paths: Paths) -> Backend:
    """The backend for ``ref``, chosen by ``config.model.backend`` (``--backend``)."""
    if ref.source == "scripted":
        from smoltui.backends.scripted import ScriptedBackend

        return ScriptedBackend()
    if config.model.backend == "openai":
        return _openai_backend(ref, config)
    if config.model.backend == "transformers":
        return _transformers_backend(ref, config)
    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings
    from smoltui.config import physical_cores

    assert ref.path is not None
    settings = LlamaSettings(
        n_ctx=config.model.n_ctx,
        n_threads=config.model.threads or physical_cores(),
        n_batch=config.model.n_batch,
        prompt_cache_dir=paths.prompt_cache_dir if config.model.prompt_cache else None,
        kv_keep_bytes=config.model.keep_conversations_mb << 20,
    )
    return LlamaCppBackend(ref.path, settings, model_name=ref.name)


def _openai_backend(ref: ModelRef, config: Config) -> Backend:
    from smoltui.backends.openai_compat import OpenAICompatBackend, OpenAISettings

    c = config.openai
    return OpenAICompatBackend(OpenAISettings(
        base_url=c.base_url,
        api_key=c.api_key or os.environ.get("SMOLTUI_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None,
        model="" if ref.name == OPENAI_SERVER_DEFAULT else ref.name,
        context_size=c.context_size,
        timeout_s=c.timeout,
        think_flag=c.think_flag,
    ))


def _transformers_backend(ref: ModelRef, config: Config) -> Backend:
    import importlib.util

    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(f"the transformers backend needs {' and '.join(missing)}: run `pip install 'smoltui[gpu]'`")
    try:
        from smoltui.backends.transformers_backend import TransformersBackend, TransformersSettings
    except ImportError as error:
        raise ModelError(f"the transformers backend cannot start ({error}): run `pip install 'smoltui[gpu]'`") from None
    settings = TransformersSettings(**config.transformers.model_dump())
    model = str(ref.path) if ref.path is not None else ref.name
    return TransformersBackend(model, settings, model_name=Path(model).name or model)


class QuietFileHandler(logging.FileHandler):
    """The log file, for a process whose terminal only gets one-line errors: when a record cannot
    be written (a full disk, a removed folder), it is dropped. ``logging``'s default would print
    "--- Logging error ---" and a traceback on stderr, in the middle of a reply."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        pass


def setup_logging(paths: Paths) -> None:
    """Send logs (and tracebacks) to the log file; the terminal only gets one-line errors."""
    try:
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = QuietFileHandler(paths.log_file, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def log_hint() -> str:
    """`` (details in FILE)`` when the log file is set up."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return f" (details in {handler.baseFilename})"
    return ""


__all__ = ["build_core", "Core", "Settings", "WorkflowFolder", "build_backend", "chat_settings", "open_core",
           "resolve_and_build", "setup_logging"]

