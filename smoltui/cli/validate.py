"""``smoltui validate FILE``: every problem of a workflow at once, against the core's tools."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from smoltui.cli.common import settings_of
from smoltui.cli.remote import through_server
from smoltui.core import open_core


def run(args: argparse.Namespace) -> int:
    from smoltui.orchestrator.workflow_spec import WorkflowError, load_workflow
    from smoltui.orchestrator.workflow_validate import validate_workflow

    problems = _served_problems(args)
    if problems is None:
        problems = asyncio.run(_problems(args, validate_workflow))
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


def _served_problems(args: argparse.Namespace) -> list | None:
    """The problems as the server's core sees them (its tools, MCP included); None: no server."""
    from pathlib import Path

    from smoltui.orchestrator.workflow_spec import Problem, WorkflowError

    found: list[Problem] = []

    async def ask(client) -> int:  # noqa: ANN001
        path = Path(args.file).expanduser()
        if not path.is_file():
            raise WorkflowError(f"{args.file}: no such file")
        # The text travels, so the problems name the file as it was given here.
        answer = await client.validate(text=path.read_text(encoding="utf-8", errors="replace"), name=args.file)
        found.extend(Problem(**p) for p in answer["problems"])
        return 0

    return found if through_server(args, ask) is not None else None


async def _problems(args: argparse.Namespace, validate):  # noqa: ANN001, ANN202
    settings = settings_of(args)
    core = await open_core(settings)
    try:
        for problem in await core.start_tools():
            print(f"smoltui: warning: {problem}", file=sys.stderr)
        return validate(args.file, tools=core.tools)
    finally:
        await core.close()
