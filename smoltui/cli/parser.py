"""The command line's shape: every command, option and help text; standard library only, so that
``smoltui --help`` imports nothing heavy. What each command does lives in its own module (see
:data:`smoltui.cli.COMMANDS`)."""

from __future__ import annotations

import argparse

from smoltui import __version__

BACKENDS = ("llama_cpp", "transformers", "openai")


def _at_least(minimum: float, kind: type = int):
    """An argparse ``type`` that parses ``kind`` and refuses values below ``minimum`` with a message
    naming the limit (``--n-ctx 10`` would otherwise reach llama.cpp and end in a numpy error)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is too small: the least is {minimum}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, like every other error (argparse prints the whole usage first)."""

    def error(self, message: str):  # noqa: ANN201 (argparse's signature: it never returns)
        self.exit(2, f"smoltui: {message} (see `{self.prog} --help`)\n")


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS lets the same option appear before or after the subcommand without the later
    # parser resetting what the earlier one set.
    common = _Parser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help="keep config, history and caches under DIR (or set SMOLTUI_HOME)")
    common.add_argument("--model", "-m", metavar="PATH_OR_NAME", default=argparse.SUPPRESS,
                        help="a .gguf file, a pulled model name (smollm3), or 'scripted'; with "
                             "--backend transformers a folder or hub id, with openai the server's model id")
    common.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS,
                        help="model runtime (default: [model] backend in the config, else llama_cpp)")
    common.add_argument("--threads", type=_at_least(1), metavar="N", default=argparse.SUPPRESS,
                        help="CPU threads for generation (default: physical cores)")
    common.add_argument("--n-ctx", type=_at_least(256), metavar="TOKENS", default=argparse.SUPPRESS,
                        help="context size in tokens (default 4096)")
    common.add_argument("--local", action="store_true", default=argparse.SUPPRESS,
                        help="build the core in this process even when `smoltui serve` runs for this home "
                             "(or set SMOLTUI_LOCAL=1); without a server every command runs in-process anyway")
    return common


def add_approve_option(parser: argparse.ArgumentParser) -> None:
    """``--approve none|all|read|TOOL[,TOOL...]`` for commands that may run tools with nobody to ask.

    Parsed as a plain string so ``--help`` stays light; the core's policy checks it.
    """
    parser.add_argument(
        "--approve", metavar="none|all|read|TOOL[,TOOL...]", default=None,
        help="headless tool approvals, for calls the config would ask about: none (refuse them; the "
             "default), all, read (read-only tools only), or a comma-separated list of tools; "
             "a tool the config denies stays denied",
    )


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = _Parser(
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
    chat.add_argument("--max-tokens", type=_at_least(1), metavar="N", help="stop the reply after N tokens")
    chat.add_argument("--show-thinking", action="store_true", help="print thinking to stderr")
    chat.add_argument("--tools", metavar="TOOL[,TOOL...]|all",
                      help="tools the model may call (thinking is off unless --think); "
                           "calls still need --approve")
    chat.add_argument("--max-steps", type=_at_least(1), metavar="N", default=None,
                      help="rounds of tool calls before the loop stops (default 6)")
    add_approve_option(chat)

    audit = sub.add_parser("audit", parents=[common], help="list recorded tool calls and their approvals")
    audit.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    audit.add_argument("--run", metavar="ID", help="only the calls of this workflow run")
    audit.add_argument("--session", type=_at_least(1), metavar="N", help="only the calls of this chat session")
    audit.add_argument("--limit", type=_at_least(1), metavar="N", default=200, help="at most N rows, newest first (200)")

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
    plan.add_argument("--out", metavar="DIR", help="folder to save in (default: ./workflows when it exists, else your workflow folder)")
    plan.add_argument("--json", action="store_true", help="print {yaml, problems, path} as JSON")
    plan.add_argument("--max-tokens", type=_at_least(1), metavar="N", help="longest reply the model may write (1200)")

    add_workflow_commands(sub, common)

    models = sub.add_parser("models", parents=[common], help="list or download models")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = models_sub.add_parser("list", parents=[common], help="bundled, local and cached models")
    listing.add_argument("--json", action="store_true")
    pull = models_sub.add_parser("pull", parents=[common], help="download a model from Hugging Face")
    pull.add_argument("name", help="smollm3, smollm3-q8, or OWNER/REPO:FILE.gguf")

    db = sub.add_parser("db", parents=[common], help="check the history database, or back it up")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_sub.add_parser("check", parents=[common],
                      help="run SQLite's integrity check on the database (read-only); exit 1 if damaged")
    db_backup = db_sub.add_parser("backup", parents=[common],
                                  help="copy the database to FILE, consistent even while smoltui runs")
    db_backup.add_argument("file", metavar="FILE", help="where to write the copy")
    db_backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    add_serve_command(sub, common)
    add_web_command(sub, common)
    add_approval_commands(sub, common)

    bench = sub.add_parser("bench", parents=[common],
                           help="measure the backend and model: load time, TTFT, prefill/decode tok/s, memory")
    bench.add_argument("--prompt-tokens", type=_at_least(1), default=512, metavar="N", help="prompt length to prefill (512)")
    bench.add_argument("--new-tokens", type=_at_least(1), default=128, metavar="M", help="tokens to decode per run (128)")
    bench.add_argument("--runs", type=_at_least(1), default=3, metavar="R", help="measured runs; medians reported (3)")
    bench.add_argument("--synthetic", nargs="?", const="3b", choices=("3b", "tiny"), default=None,
                       help="build (once, in the cache dir) and measure a random-weight SmolLM3-3B-shaped model "
                            "for the backend (tiny: 4 layers, for a quick check)")
    bench.add_argument("--json", action="store_true", help="print the measurements as JSON")
    return parser


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--var", action="append", metavar="NAME=VALUE", default=[],
                        help="override a workflow variable (repeatable; the value is read as YAML)")
    parser.add_argument("--concurrency", type=_at_least(1), metavar="N",
                        help="run at most N tasks at once (default: the workflow's max_concurrent_tasks)")
    parser.add_argument("--json", action="store_true", help="print progress as JSON lines")
    parser.add_argument("--workspace", metavar="DIR",
                        help="folder tool calls may touch (default: the workflow file's folder)")
    add_approve_option(parser)


def add_workflow_commands(sub, common: argparse.ArgumentParser) -> None:  # noqa: ANN001
    """``run``, ``resume``, ``runs`` and ``logs`` (implemented in :mod:`smoltui.workflow_cli`)."""
    run = sub.add_parser("run", parents=[common], help="run a workflow headless (validates it first)")
    run.add_argument("file", metavar="FILE", help="the workflow YAML file")
    run.add_argument("--detach", "-d", action="store_true",
                     help="start the run on the server (`smoltui serve`), print its id and return; "
                          "follow it with `smoltui logs -f ID`")
    _run_options(run)
    resume = sub.add_parser("resume", parents=[common], help="resume a run; finished tasks are not re-run")
    resume.add_argument("run_id", metavar="RUN_ID", help="the run's id (see `smoltui runs`)")
    _run_options(resume)
    runs = sub.add_parser("runs", parents=[common], help="list workflow runs, newest first")
    runs.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    runs.add_argument("--limit", type=_at_least(1), metavar="N", default=None, help="at most N runs")
    runs.add_argument("--delete", nargs="+", metavar="RUN_ID",
                      help="delete these runs and their artifacts (not one that a process drives)")
    runs.add_argument("--prune", type=_at_least(0, float), metavar="DAYS",
                      help="delete the runs that ended more than DAYS days ago, with their artifacts")
    logs = sub.add_parser("logs", parents=[common], help="print a run's events from the store")
    logs.add_argument("run_id", metavar="RUN_ID", help="the run's id (see `smoltui runs`)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    logs.add_argument("--json", action="store_true", help="print the events as JSON lines")
    logs.add_argument("--interval", type=_at_least(0.05, float), default=0.2, metavar="SECONDS", help=argparse.SUPPRESS)
    show = sub.add_parser("show", parents=[common], help="print a run's outputs: text, tables, artifact paths")
    show.add_argument("run_id", metavar="RUN_ID", help="the run's id (see `smoltui runs`)")
    show.add_argument("task_id", metavar="TASK", nargs="?", help="only this task (default: every task with outputs)")
    show.add_argument("--json", action="store_true", help="print the outputs as JSON (artifacts as references)")


def add_approval_commands(sub, common: argparse.ArgumentParser) -> None:  # noqa: ANN001
    """``approvals``, ``approve ID`` and ``deny ID``: the calls waiting on a server, and the answers."""
    approvals = sub.add_parser("approvals", parents=[common],
                               help="list the tool calls waiting for a person on the server (`smoltui serve`)")
    approvals.add_argument("--json", action="store_true", help="print the waiting calls as a JSON list")
    approvals.add_argument("--run", metavar="ID", help="only the calls of this run")
    approve = sub.add_parser("approve", parents=[common], help="approve a waiting tool call (see `smoltui approvals`)")
    approve.add_argument("call_id", metavar="ID", help="the call's id")
    approve.add_argument("--always", action="store_true",
                         help="also approve this tool's later calls in the same chat or run")
    deny = sub.add_parser("deny", parents=[common], help="deny a waiting tool call (see `smoltui approvals`)")
    deny.add_argument("call_id", metavar="ID", help="the call's id")
    deny.add_argument("--reason", metavar="TEXT", help="why: the model (or the run's log) is told")
    deny.add_argument("--always", action="store_true", help="also deny this tool's later calls in the same chat or run")


def add_serve_command(sub, common: argparse.ArgumentParser) -> None:  # noqa: ANN001
    """``serve`` (foreground or ``--detach``), ``serve status``, ``serve stop``, ``serve token``."""
    serve = sub.add_parser(
        "serve", parents=[common], help="run one core for this home that terminals, scripts and browsers share",
        description="Serve this home's core (the model loaded once, the store, runs, approvals) over HTTP: a Unix "
                    "socket private to you, and TCP with a bearer token when --listen says so.")
    serve.add_argument("--detach", action="store_true", help="start in the background; return once it answers")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="also listen on TCP (e.g. 127.0.0.1:8765); every request then needs the bearer "
                            "token (`smoltui serve token`)")
    serve.add_argument("--cors-origin", action="append", metavar="ORIGIN", default=[],
                       help="let a web page from ORIGIN call the API (repeatable; default: none)")
    serve.add_argument("--workspace", metavar="DIR", help="folder chat tools work in (default: config or cwd)")
    serve.add_argument("--install-unit", action="store_true",
                       help="write a systemd user unit that runs this server (~/.config/systemd/user/smoltui.service)")
    serve.add_argument("--force", action="store_true", help="with --install-unit: replace an existing unit")
    actions = serve.add_subparsers(dest="serve_command", metavar="ACTION")
    status = actions.add_parser("status", parents=[common], help="is a server running for this home, and where")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    actions.add_parser("stop", parents=[common], help="stop this home's server (its runs can be resumed)")
    actions.add_parser("token", parents=[common], help="print the bearer token TCP clients send (made if missing)")


def add_web_command(sub, common: argparse.ArgumentParser) -> None:  # noqa: ANN001
    """``web``: the TUI in a browser (textual-serve), one ``smoltui`` process per tab."""
    web = sub.add_parser(
        "web", parents=[common], help="serve the TUI in a browser (each tab runs smoltui; loopback only)",
        description="Serve the TUI to browsers through textual-serve: each tab runs its own `smoltui` for this "
                    "home, which attaches to `smoltui serve` when one runs. textual-serve has no authentication, "
                    "so it listens on loopback; from another machine use `ssh -L 8000:127.0.0.1:8000 HOST`.")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--port", type=_at_least(1), default=8000, help="port to listen on (default 8000)")
    web.add_argument("--public", action="store_true",
                     help="allow a --host beyond loopback (anyone who reaches it gets a TUI running as you)")
    web.add_argument("--public-url", metavar="URL", default=None,
                     help="the URL browsers use, when it differs from http://HOST:PORT (a proxy)")
