"""``smoltui tools list|run``: the core's tools (built-in, plugins, MCP), and one call through its gate."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from smoltui.cli.common import settings_of
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
    return asyncio.run(_tools(args, arguments, settings_of(args, workspace=workspace)))


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
    tools = core.tools.tools
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
