"""``smoltui plan "GOAL"``: the model drafts a workflow, you review it, it is saved on accept.

The draft is printed as YAML on stdout (problems, one per line, on stderr). On a terminal you are
asked ``save to PATH? [y/N/e(dit)]``; ``e`` opens ``$EDITOR`` on the draft and checks it again.
``--yes`` saves without asking, ``--save`` saves even when nobody can be asked, ``--no-save`` never
saves. ``--json`` prints ``{"yaml", "problems", "path", "reply"}`` (``reply``: what the model wrote).

Exit codes: 0 a valid draft (printed or saved), 2 still invalid after the repair attempt (or after
your edit), others as in :mod:`smoltui.errors`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smoltui.cli.common import settings_of
from smoltui.cli.remote import client_for, run_with
from smoltui.core import open_core
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.planner import (
    MAX_TOKENS,
    Draft,
    DraftProgress,
    next_free_path,
    save_folders,
    save_workflow,
    workflow_stem,
)
from smoltui.orchestrator.workflow_spec import Problem, WorkflowError


def run(args: argparse.Namespace) -> int:
    """The ``plan`` command (its options are defined in :func:`smoltui.cli.parser.build_parser`)."""
    goal = _read_goal(args)
    max_tokens = args.max_tokens or MAX_TOKENS
    if max_tokens < 64:
        raise SmoltuiError("--max-tokens must be at least 64")
    settings = settings_of(args)
    # As in the app: the project's workflows/ when it has one (relative paths reach its files).
    folder = Path(args.out).expanduser() if args.out else save_folders(settings.project_dir, settings.paths.workflows_dir)[0]
    client = client_for(args)
    checker: Callable[[str], list[Problem]]
    if client is not None:
        found: list[Draft] = []

        async def ask(served: Any) -> int:
            found.append(await _draft_served(args, served, goal, max_tokens))
            return 0

        run_with(client, ask)
        draft, checker = found[0], _ServedChecker(args)
    else:
        draft, tools = asyncio.run(_draft(args, settings, goal, max_tokens))
        checker = _Checker(tools)
    text, problems = draft.yaml, draft.problems
    path: Path | None = None
    interactive = not args.json and args.save is not False and not args.yes and _can_ask()
    if not args.json:  # not even JSON: show what the model wrote
        shown_text = text or draft.reply
        sys.stdout.write(shown_text if shown_text.endswith("\n") else shown_text + "\n")
        sys.stdout.flush()
    shown = False
    if interactive and draft.yaml:
        if problems:
            _print_problems(problems)
        text, problems, path = _review(text, problems, folder, checker)
        shown = True
    elif not problems and (args.yes or args.save):
        path = save_workflow(text, folder)
    if args.json:
        payload = {"yaml": text, "problems": [p.as_dict() for p in problems], "path": str(path) if path else None,
                   "reply": draft.reply}
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    if problems:
        if not shown:
            _print_problems(problems)
        return WorkflowError.exit_code
    if path is not None:
        print(f"smoltui: saved {path}", file=sys.stderr)
    elif not args.json and args.save is None and not interactive:
        print(f"smoltui: not saved (pass --yes to save it in {folder})", file=sys.stderr)
    return 0


def _read_goal(args: argparse.Namespace) -> str:
    goal = args.goal
    if goal is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise SmoltuiError('nothing to plan: give a goal, e.g. smoltui plan "summarise notes.md", or on stdin')
        goal = sys.stdin.read()
    goal = " ".join(goal.split())
    if not goal:
        raise SmoltuiError("nothing to plan: the goal is empty")
    return goal


async def _draft(args: argparse.Namespace, settings, goal: str, max_tokens: int) -> tuple[Draft, dict]:  # noqa: ANN001
    core = await open_core(settings)
    try:
        for problem in await core.start_tools():
            print(f"smoltui: warning: {problem}", file=sys.stderr)
        if not args.json:
            print(f"smoltui: drafting a workflow with {core.model.label} …", file=sys.stderr, flush=True)

        def repairing(problems: list[Problem]) -> None:
            print(f"smoltui: the draft has {len(problems)} problem{'s' if len(problems) != 1 else ''}; "
                  "asking the model to fix them …", file=sys.stderr, flush=True)

        progress = _ProgressLine() if not args.json and sys.stderr.isatty() else None
        try:
            async with core.model.turn("the planner") as backend:
                planner = core.planner(backend, max_tokens=max_tokens)
                draft = await planner.draft(goal, on_repair=repairing,
                                            on_progress=progress.update if progress else None)
        finally:
            if progress is not None:
                progress.close()
        return draft, dict(planner.tools)
    finally:
        await core.close()


async def _draft_served(args: argparse.Namespace, client: Any, goal: str, max_tokens: int) -> Draft:
    """The server's model drafts (with the server's tools); the same notes as in-process."""
    async for event in client.plan(goal, max_tokens=max_tokens):
        if event.kind == "started" and not args.json:
            print(f"smoltui: drafting a workflow with {event.data.get('model')} …", file=sys.stderr, flush=True)
        elif event.kind == "repair":
            count = len(event.data.get("problems") or [])
            print(f"smoltui: the draft has {count} problem{'s' if count != 1 else ''}; "
                  "asking the model to fix them …", file=sys.stderr, flush=True)
        elif event.kind == "error":
            raise SmoltuiError(str(event.data.get("message") or "the draft failed"))
        elif event.kind == "done":
            data = event.data
            return Draft(data["goal"], data["yaml"], [Problem(**p) for p in data["problems"]], data["attempts"],
                         data["reply"], cancelled=data["cancelled"])
    raise SmoltuiError("the server ended the draft without an answer")


class _ServedChecker:
    """Validation of an edited draft by the server (its tools, MCP included)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def __call__(self, text: str) -> list[Problem]:
        found: list[Problem] = []

        async def check(client: Any) -> int:
            answer = await client.validate(text=text, name="draft.yaml")
            found.extend(Problem(**p) for p in answer["problems"])
            return 0

        client = client_for(self.args)
        if client is None:
            raise SmoltuiError("the server stopped; check the draft with `smoltui validate` after saving it")
        run_with(client, check)
        return found


class _ProgressLine:
    """The draft's progress on one terminal line (tokens, tok/s, seconds), redrawn at most twice a
    second and every second while the model reads the prompt (it can take most of a minute)."""

    def __init__(self) -> None:
        self.progress: DraftProgress | None = None
        self.drawn = 0.0
        self.started = time.monotonic()
        self.clock = asyncio.get_running_loop().call_later(1.0, self._tick)

    def update(self, progress: DraftProgress) -> None:
        phase_changed = self.progress is None or self.progress.phase != progress.phase
        self.progress = progress
        if phase_changed or time.monotonic() - self.drawn >= 0.5:
            self._draw()

    def _tick(self) -> None:
        self._draw()
        self.clock = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _draw(self) -> None:
        if self.progress is None:
            return
        self.drawn = time.monotonic()
        line = self.progress.describe(self.drawn - self.started)
        sys.stderr.write(f"\r\x1b[Ksmoltui: drafting… {line}")
        sys.stderr.flush()

    def close(self) -> None:
        self.clock.cancel()
        if self.progress is not None:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


class _Checker:
    """Validation of an edited draft, against the same tools (no model needed)."""

    def __init__(self, tools: dict) -> None:
        self.tools = tools

    def __call__(self, text: str) -> list[Problem]:
        from smoltui.orchestrator.workflow_validate import validate_text

        return validate_text(text, "draft.yaml", tools=self.tools)


def _can_ask() -> bool:
    return bool(sys.stdin and sys.stdin.isatty() and sys.stderr.isatty())


def _review(text: str, problems: list[Problem], folder: Path, check: Callable[[str], list[Problem]]) -> tuple[str, list[Problem], Path | None]:
    """Ask until the user saves, declines or gives up; edits are checked again."""
    while True:
        if problems:
            question = "the draft has problems: edit it? [e(dit)/N] "
        else:
            question = f"save to {next_free_path(folder, workflow_stem(text))}? [y/N/e(dit)] "
        sys.stderr.write(question)  # stdout carries only the YAML
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer in ("y", "yes") and not problems:
            return text, problems, save_workflow(text, folder)
        if answer in ("e", "edit"):
            text = _edit(text)
            problems = check(text)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
            if problems:
                _print_problems(problems)
            continue
        return text, problems, None


def _edit(text: str) -> str:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    fd, name = tempfile.mkstemp(prefix="smoltui-plan-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            subprocess.run([*shlex.split(editor), name], check=False)
        except OSError as error:
            raise SmoltuiError(f"cannot start the editor {editor!r}: {error}") from None
        return Path(name).read_text(encoding="utf-8")
    finally:
        Path(name).unlink(missing_ok=True)


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)
    count = len(problems)
    print(f"draft.yaml: {count} problem{'s' if count != 1 else ''} (not saved)", file=sys.stderr)
