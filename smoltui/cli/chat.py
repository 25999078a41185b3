"""``smoltui chat``: one message, the reply streamed to stdout (or as JSON), stored like a TUI chat."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TextIO

from smoltui.cli.common import settings_of
from smoltui.cli.remote import client_for, run_with
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
    client = client_for(args)
    if client is not None:
        unsupported = [flag for flag, value in (("--system", args.system), ("--max-tokens", args.max_tokens),
                                                ("--max-steps", args.max_steps)) if value is not None]
        if unsupported:
            raise SmoltuiError(f"{', '.join(unsupported)}: the server's chat settings apply to every client; "
                               "add --local to chat in-process with your own")
        return run_with(client, lambda c: _chat_served(args, c, prompt))
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

    shower = _Shower(args, stop, core.chat.cancel)
    show = shower.show
    core.bus.subscribe(show)
    service = core.chat
    if not await service.load_model():
        raise service.load_exception or ModelError(service.load_error or "the model failed to load")
    session = await core.store.create_session(_title(prompt), core.model.label)
    stop.session_id = session.id
    if tools:
        await service.set_session_tools(session.id, tools)
    finished = await service.send(session.id, prompt)
    return shower.end(finished, core.model.label, service.backend.name, session.id)


class _Shower:
    """The reply as it streams: text to stdout, tool calls, thinking and notes to stderr (or, with
    ``--json``, one object at the end); the same for a core here and one behind a server."""

    def __init__(self, args: argparse.Namespace, stop: _Stop, cancel: Callable[[], object]) -> None:
        self.args = args
        self.stop = stop
        self.cancel = cancel
        self.failures: list[str] = []
        self.calls: list[dict] = []
        self.reader_gone = False

    def show(self, event) -> None:  # noqa: ANN001
        if self.reader_gone:
            return
        try:
            self._show(event)
        except BrokenPipeError:  # `smoltui chat ... | head -1`: nobody reads the rest; stop the reply
            self.reader_gone = True
            self.cancel()

    def _show(self, event) -> None:  # noqa: ANN001
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

        args, stop = self.args, self.stop
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
            self.calls.append({"name": event.name, "ok": event.ok, "result": event.summary})
            if not args.json:
                print(f"  {'✓' if event.ok else '✗'} {event.summary}", file=sys.stderr, flush=True)
        elif isinstance(event, ToolStepLimit):
            print(f"smoltui: stopped after {event.steps} rounds of tool calls", file=sys.stderr)
        elif isinstance(event, ThinkingTokenDelta) and args.show_thinking:
            sys.stderr.write(event.text)
            sys.stderr.flush()
        elif isinstance(event, ReplyFailed):
            self.failures.append(event.message)
        elif isinstance(event, ContextTrimmed):
            print(f"smoltui: dropped {event.dropped_messages} old messages to fit the context", file=sys.stderr)

    def end(self, finished, model: str, backend: str, session_id: int) -> int:  # noqa: ANN001
        if self.reader_gone:
            raise BrokenPipeError  # the command line ends quietly
        if finished is None:
            raise BackendError(self.failures[0] if self.failures else "the reply failed")
        if self.args.json:
            payload = {
                "reply": finished.content,
                "thinking": finished.thinking,
                "model": model,
                "backend": backend,
                "session_id": session_id,
                "stats": finished.stats.as_dict(),
                "tool_calls": self.calls,
            }
            print(json.dumps(payload, ensure_ascii=False, indent=2))
        elif not finished.content.endswith("\n"):
            sys.stdout.write("\n")
        return 0


SHOWN_KINDS = ("token", "thinking", "tool_call_requested", "tool_call_done", "tool_step_limit", "reply_failed",
               "context_trimmed")


async def _chat_served(args: argparse.Namespace, client: Any, prompt: str) -> int:
    """The reply is the server's: Ctrl+C (or SIGTERM) cancels it there, as in-process; a closed
    terminal (SIGHUP) leaves it going, kept in the chat, for any client to read."""
    with _Stop() as stop:
        try:
            return await _send_served(args, client, prompt, stop)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if stop.received is None or task is None:
                raise
            task.uncancel()
            if stop.session_id is not None and stop.received != signal.SIGHUP:
                with contextlib.suppress(SmoltuiError):
                    await asyncio.shield(client.cancel_reply(stop.session_id))
            return stop.report()


async def _send_served(args: argparse.Namespace, client: Any, prompt: str, stop: _Stop) -> int:
    from smoltui.backends.base import GenerationStats
    from smoltui.orchestrator import events as bus
    from smoltui.tools.calls import ApproveFlag

    kinds = {"token": bus.TokenDelta, "thinking": bus.ThinkingTokenDelta, "tool_call_requested": bus.ToolCallRequested,
             "tool_call_done": bus.ToolCallDone, "tool_step_limit": bus.ToolStepLimit, "reply_failed": bus.ReplyFailed,
             "context_trimmed": bus.ContextTrimmed}
    tools: list[str] = []
    if args.tools:
        known = [tool["name"] for tool in await client.tools()]
        tools = known if args.tools.strip() == "all" else [name.strip() for name in args.tools.split(",") if name.strip()]
    flag = ApproveFlag.parse(args.approve, known_tools=None)
    think = args.think if args.think is not None or not tools else False
    health = await client.health()
    session = await client.create_chat(_title(prompt), tools=tools)
    stop.session_id = session["id"]
    shower = _Shower(args, stop, lambda: asyncio.ensure_future(client.cancel_reply(session["id"])))
    finished = None
    async for event in client.send(session["id"], prompt, think=think):
        if event.kind in kinds:
            cls = kinds[event.kind]
            names = {f.name for f in dataclasses.fields(cls) if f.name != "kind"}
            shower.show(cls(**{k: v for k, v in event.data.items() if k in names}))
        elif event.kind == "approval_needed":
            # A headless command answers its own calls with --approve (default none), as in-process.
            asked = event.data.get("request") or {}
            if flag.allows(asked.get("tool", ""), asked.get("risk", "")):
                await client.approve(asked["call_id"])
            else:
                await client.deny(asked["call_id"], reason=f"--approve {args.approve or 'none'} does not allow it")
        elif event.kind == "reply_finished":
            stats = GenerationStats(**{k: v for k, v in event.data["stats"].items()
                                       if k in {f.name for f in dataclasses.fields(GenerationStats)}})
            finished = SimpleNamespace(content=event.data["content"], thinking=event.data["thinking"], stats=stats)
        elif event.kind == "done" and not event.data.get("ok") and event.data.get("error"):
            shower.failures.append(event.data["error"])
    model = health["model"]
    return shower.end(finished, model["label"], model["backend"] or "", session["id"])


def _title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 60 else line[:59] + "…"
