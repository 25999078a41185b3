"""``smoltui chat``: one message, the reply streamed to stdout (or as JSON), stored like a TUI chat."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import TextIO

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


class _Stop:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal, a dropped SSH session) end the command the
    way Ctrl+C does: the running task is cancelled, so the reply saves what it has said (marked cut
    off) and the core closes. Without this SIGTERM and SIGHUP would end the process on the spot."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.session_id: int | None = None
        self.said = False
        """Whether the reply had begun (what it said is in the store)."""
        self.mid_line = False
        """Whether stdout's last line is a reply's unfinished one."""
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> _Stop:
        for sig in self.SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig in self.SIGNALS:
            self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is not None:
            return  # already stopping: the save takes milliseconds, let it finish
        self.received = sig
        if sig == signal.SIGHUP:
            _leave_the_terminal()
        if self._task is not None:
            self._task.cancel()

    def report(self) -> int:
        """One line on how the command ended; the exit status a shell expects (128 + signal)."""
        assert self.received is not None
        if self.mid_line:
            _print(sys.stdout, "\n")
        kept = f"; the reply so far is kept in chat {self.session_id}, marked cut off" if self.said else ""
        _print(sys.stderr, f"smoltui: stopped by {self.received.name}{kept}\n")
        return 128 + self.received


def _leave_the_terminal() -> None:
    """After SIGHUP the terminal is gone: writing to it would fail, so output bound for it goes
    to /dev/null (a file or a pipe keeps what it gets)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
        except (AttributeError, OSError, ValueError):
            pass


def _print(stream: TextIO, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # nobody is reading any more: nothing to tell
        pass


async def _chat(args: argparse.Namespace, prompt: str, settings: Settings) -> int:
    with _Stop() as stop:
        try:
            core = await open_core(settings)
            try:
                tools: list[str] = []
                if args.tools:
                    for problem in await core.start_tools():
                        print(f"smoltui: warning: {problem}", file=sys.stderr)
                    tools = core.select_tools(args.tools)
                # SmolLM3 calls tools more reliably without a reasoning block: off unless asked for.
                think = args.think if args.think is not None or not tools else False
                core.chat.settings = chat_settings(core.config, system=args.system, think=think,
                                                   max_tokens=args.max_tokens)
                if args.max_steps is not None:
                    core.chat.settings.max_tool_steps = args.max_steps
                return await _send(args, core, prompt, tools, stop)
            finally:
                await core.close()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if stop.received is None or task is None:
                raise
            task.uncancel()  # the cancellation was ours, and it is handled
            return stop.report()


async def _send(args: argparse.Namespace, core: Core, prompt: str, tools: list[str], stop: _Stop) -> int:
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
        if isinstance(event, TokenDelta):
            stop.said = True
            if not args.json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
                stop.mid_line = not event.text.endswith("\n")
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
    stop.session_id = session.id
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
