"""One place decides whether a command talks to a running ``smoltui serve`` or builds its core
in-process: a server for this home runs (its lock is held, its socket answers) and neither
``--local`` nor ``SMOLTUI_LOCAL=1`` says otherwise. With no server nothing changes: the command
builds its core in-process exactly as before, with no set-up.

Through a server, a command prints what its in-process path prints, with the same exit codes:
the API's refusals come back as the errors the in-process path raises (:func:`cli_error`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from smoltui.cli.common import paths_of
from smoltui.errors import ConfigError, ModelError, SmoltuiError

if TYPE_CHECKING:
    from smoltui.server.client import ServerClient
    from smoltui.server.errors import ApiError

LOCAL_ENV = "SMOLTUI_LOCAL"
NO_SERVER_HINT = "start one with `smoltui serve --detach`"
IGNORED_WITH_SERVER = ("model", "backend", "threads", "n_ctx")
"""Options that choose the model: a server has loaded its own."""


def wants_local(args: argparse.Namespace) -> bool:
    """``--local``, or ``SMOLTUI_LOCAL`` set to anything but empty or 0: build the core here."""
    return bool(getattr(args, "local", False)) or os.environ.get(LOCAL_ENV, "") not in ("", "0")


def client_for(args: argparse.Namespace) -> ServerClient | None:
    """A client of this home's server, or None (no server runs, or the command was told ``--local``)."""
    if wants_local(args):
        return None
    from smoltui.server.client import ServerClient

    try:
        return ServerClient.for_home(paths_of(args))
    except OSError:  # no data folder to hold a server's lock: none runs; in-process says what is wrong
        return None


def through_server(args: argparse.Namespace, work: Callable[[ServerClient], Awaitable[int]]) -> int | None:
    """Run ``work`` with a client when a server runs: its exit code; None when none runs (the
    caller goes on in-process)."""
    client = client_for(args)
    if client is None:
        return None
    _note_ignored(args)
    return asyncio.run(_with(client, work))


async def _with(client: ServerClient, work: Callable[[ServerClient], Awaitable[int]]) -> int:
    from smoltui.server.errors import ApiError

    async with client:
        try:
            return await work(client)
        except ApiError as error:
            raise cli_error(error) from None


def _note_ignored(args: argparse.Namespace) -> None:
    given = [f"--{name.replace('_', '-')}" for name in IGNORED_WITH_SERVER if getattr(args, name, None) is not None]
    if given:
        print(f"smoltui: note: the server's model answers; {', '.join(given)} "
              f"{'is' if len(given) == 1 else 'are'} ignored (add --local to build a core here)", file=sys.stderr)


def cli_error(error: ApiError) -> SmoltuiError:
    """The in-process command's error for an API refusal: the same message and exit code."""
    message = str(error)
    if error.type == "invalid_workflow" or error.status == 422:
        from smoltui.orchestrator.workflow_spec import WorkflowError

        return WorkflowError(message)
    if error.type in ("config", "config_error"):
        return ConfigError(message)
    if error.status == 503:
        return ModelError(message)
    if error.status in (400, 404, 409):
        return SmoltuiError(message)
    return error


def require_server(args: argparse.Namespace, what: str) -> ServerClient:
    """A client, or one line saying that ``what`` needs a server (and how to start one)."""
    client = client_for(args)
    if client is None:
        if wants_local(args):
            raise SmoltuiError(f"{what} needs `smoltui serve`, and --local (or {LOCAL_ENV}) says not to use one")
        raise SmoltuiError(f"{what} needs `smoltui serve`; {NO_SERVER_HINT}")
    return client


def run_with(client: ServerClient, work: Callable[[ServerClient], Awaitable[int]]) -> int:
    return asyncio.run(_with(client, work))


__all__ = ["LOCAL_ENV", "cli_error", "client_for", "require_server", "run_with", "through_server", "wants_local"]
