"""``smoltui approvals``, ``approve ID [--always]`` and ``deny ID [--reason TEXT]``: the tool calls
waiting for a person on this home's server, and the answers to them.

Only a server keeps calls waiting for someone who is not at the terminal that started them: an
in-process command answers its own calls with its ``--approve`` flag (the TUI asks on its screen).
So with no server ``approvals`` says nothing waits (exit 0) and ``approve`` / ``deny`` say there is
no server to answer (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from smoltui.cli.common import table
from smoltui.cli.remote import NO_SERVER_HINT, client_for, require_server, run_with

ARGUMENTS_SHOWN = 60


def run(args: argparse.Namespace) -> int:
    if args.command == "approvals":
        client = client_for(args)
        if client is None:
            if args.json:
                print("[]")
            else:
                print(f"no server runs for this home, so no call waits for an answer ({NO_SERVER_HINT}; "
                      "without one, commands answer with --approve and the app asks on its screen)")
            return 0
        return run_with(client, lambda c: _list(args, c))
    client = require_server(args, f"`smoltui {args.command}`")
    return run_with(client, lambda c: _answer(args, c))


async def _list(args: argparse.Namespace, client: Any) -> int:
    waiting = await client.approvals(run_id=args.run)
    if args.json:
        print(json.dumps(waiting, ensure_ascii=False, indent=2))
        return 0
    if not waiting:
        print("no calls waiting for approval")
        return 0
    now = time.time()
    rows = [(w["call_id"], w["tool"], w["risk"], _where(w), waited(now - w["asked_at"]), _arguments(w["arguments"]))
            for w in waiting]
    print(table(("ID", "TOOL", "RISK", "WHERE", "WAITED", "ARGUMENTS"), rows, last_free=True))
    print("answer with `smoltui approve ID [--always]` or `smoltui deny ID [--reason TEXT]`", file=sys.stderr)
    return 0


def _where(waiting: dict[str, Any]) -> str:
    if waiting.get("run_id"):
        return f"run {waiting['run_id']}" + (f"/{waiting['task_id']}" if waiting.get("task_id") else "")
    if waiting.get("session_id") is not None:
        return f"chat {waiting['session_id']}"
    return "tools run"


def waited(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _arguments(arguments: Any) -> str:
    text = " ".join(json.dumps(arguments, ensure_ascii=False, default=str).split())
    return text if len(text) <= ARGUMENTS_SHOWN else text[:ARGUMENTS_SHOWN - 1] + "…"


async def _answer(args: argparse.Namespace, client: Any) -> int:
    if args.command == "approve":
        answer = await client.approve(args.call_id, always=args.always)
    else:
        answer = await client.deny(args.call_id, reason=args.reason, always=args.always)
    said = {"once": "approved", "always": "approved (and its later calls)", "deny": "denied",
            "always_deny": "denied (and its later calls)"}.get(answer["decision"], answer["decision"])
    reason = f": {answer['reason']}" if answer.get("reason") else ""
    print(f"{args.call_id}: {said}{reason}")
    return 0


__all__ = ["run", "waited"]
