"""``smoltui chat``: one message, the reply streamed to stdout (or as JSON), stored like a TUI chat."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from smoltui.cli.common import settings_of
from smoltui.core import Core, Settings, chat_settings, open_core
from smoltui.errors import BackendError, ModelError, SmoltuiError


def run(args: argparse.Namespace) -> int:
    prompt = args.prompt
    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise SmoltuiError("nothing to send: give a message with --prompt TEXT or on stdin")
        prompt = sys.stdin.read()
    prompt = prompt.strip()
    if not prompt:
        raise SmoltuiError("nothing to send: the message is empty")
    if args.max_steps is not None and args.max_steps < 1:
        raise SmoltuiError("--max-steps must be at least 1")
    return asyncio.run(_chat(args, prompt, settings_of(args)))


async def _chat(args: argparse.Namespace, prompt: str, settings: Settings) -> int:
    core = await open_core(settings)
    try:
        tools: list[str] = []
        if args.tools:
            for problem in await core.start_tools():
                print(f"smoltui: warning: {problem}", file=sys.stderr)
            tools = core.select_tools(args.tools)
        # SmolLM3 calls tools more reliably without a reasoning block: off unless asked for.
        think = args.think if args.think is not None or not tools else False
        core.chat.settings = chat_settings(core.config, system=args.system, think=think, max_tokens=args.max_tokens)
        if args.max_steps is not None:
            core.chat.settings.max_tool_steps = args.max_steps
        return await _send(args, core, prompt, tools)
    finally:
        await core.close()


async def _send(args: argparse.Namespace, core: Core, prompt: str, tools: list[str]) -> int:
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

    failures: list[str] = []
    calls: list[dict] = []
    reader_gone = False

    def show_event(event) -> None:  # noqa: ANN001
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
            print(f"smoltui: dropped {event.dropped_messages} old messages to fit the context", file=sys.stderr)

    def show(event) -> None:  # noqa: ANN001
        nonlocal reader_gone
        if reader_gone:
            return
        try:
            show_event(event)
        except BrokenPipeError:  # `smoltui chat ... | head -1`: nobody reads the rest; stop the reply
            reader_gone = True
            core.chat.cancel()

    core.bus.subscribe(show)
    service = core.chat
    if not await service.load_model():
        raise service.load_exception or ModelError(service.load_error or "the model failed to load")
    session = await core.store.create_session(_title(prompt), core.model.label)
    if tools:
        await service.set_session_tools(session.id, tools)
    finished = await service.send(session.id, prompt)
    if reader_gone:
        raise BrokenPipeError  # the command line ends quietly
    if finished is None:
        raise BackendError(failures[0] if failures else "the reply failed")
    if args.json:
        payload = {
            "reply": finished.content,
            "thinking": finished.thinking,
            "model": core.model.label,
            "backend": service.backend.name,
            "session_id": session.id,
            "stats": finished.stats.as_dict(),
            "tool_calls": calls,
        }
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    elif not finished.content.endswith("\n"):
        sys.stdout.write("\n")
    return 0


def _title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 60 else line[:59] + "…"
