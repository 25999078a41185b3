"""``smoltui tools list|run``: the core's tools (built-in, plugins, MCP), and one call through its gate."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from smoltui.cli.common import settings_of
from smoltui.cli.remote import through_server
from smoltui.core import Core, open_core
from smoltui.errors import SmoltuiError

TOOL_FAILED_EXIT = 8


def run(args: argparse.Namespace) -> int:
    arguments = None
    if args.tools_command == "run":
        try:
            arguments = json.loads(args.args)
        except json.JSONDecodeError as error:
            raise SmoltuiError(f"--args is not valid JSON: {error}") from None
        if not isinstance(arguments, dict):
            raise SmoltuiError(f"--args must be a JSON object, not {type(arguments).__name__}")
    workspace = Path(args.workspace).expanduser().resolve() if getattr(args, "workspace", None) else None
    served = through_server(args, lambda client: _served(args, client, arguments, workspace))
    if served is not None:
        return served
    return asyncio.run(_tools(args, arguments, settings_of(args, workspace=workspace)))


async def _served(args: argparse.Namespace, client: Any, arguments: Any, workspace: Path | None) -> int:
    """The server's tools; one call through its gate, its ask answered as ``--approve`` says
    (the server answers it: default ``none``, as in-process)."""
    if args.tools_command == "list":
        _print_list(args, [SimpleNamespace(**t) for t in await client.tools()])
        return 0
    # A workspace given here is this machine's folder: the server is on the same machine (its socket).
    finished = await client.call_tool(args.name, arguments, workspace=workspace or Path.cwd(),
                                      approve=args.approve or "none")
    result = SimpleNamespace(ok=finished["ok"], content=finished["content"], error=finished["error"],
                             duration_s=finished["duration_s"],
                             artifacts=[SimpleNamespace(path=a["path"], summary=a["summary"])
                                        for a in finished["artifacts"]])
    # What ToolResult.for_model() gives in-process
    body: dict[str, Any] = {"error": finished["error"], "kind": finished["error_kind"]}
    if finished["ok"]:
        body = {"result": finished["content"]}
        if finished["artifacts"]:
            body["artifacts"] = finished["artifacts"]
    return _print_result(args, result, body, finished["notices"])


async def _tools(args: argparse.Namespace, arguments: object, settings) -> int:  # noqa: ANN001
    core = await open_core(settings)
    try:
        for problem in await core.start_tools():
            print(f"smoltui: warning: {problem}", file=sys.stderr)
        if args.tools_command == "list":
            _list(args, core)
            return 0
        return await _run_one(args, core, arguments)
    finally:
        await core.close()


def _list(args: argparse.Namespace, core: Core) -> None:
    _print_list(args, core.tools.tools)


def _print_list(args: argparse.Namespace, tools: list[Any]) -> None:
    if args.json:
        rows = [{"name": t.name, "risk": t.risk, "origin": t.origin, "description": t.description,
                 "parameters": t.parameters} for t in tools]
        print(json.dumps(rows, indent=2))
        return
    width = max(len(t.name) for t in tools)
    for t in tools:
        print(f"{t.name:<{width}}  {t.risk:<7}  {t.description.splitlines()[0]}")


async def _run_one(args: argparse.Namespace, core: Core, arguments: object) -> int:
    from smoltui.tools.base import ToolContext
    from smoltui.tools.calls import ToolCall

    ctx = ToolContext(workspace=core.chat.workspace, artifacts_dir=core.paths.data_dir / "artifacts" / "cli")
    result = await core.gate.run(ToolCall.new(args.name, arguments), ctx)  # type: ignore[arg-type]
    return _print_result(args, result, result.for_model(), ctx.notices)


def _print_result(args: argparse.Namespace, result: Any, body: dict[str, Any], notices: list[str]) -> int:
    for notice in notices:
        print(f"smoltui: note: {notice}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": result.ok, **body, "duration_s": round(result.duration_s, 4)},
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
