"""The command line: a stdlib-only parser (:mod:`smoltui.cli.parser`) and a table of command
modules, each imported only when its command runs, so ``--help`` and ``--version`` stay instant.

Every command module has ``run(args) -> int`` and gets what it needs from the core
(:mod:`smoltui.core`); none builds its own tools, policy or runner. Errors a user can act on are
one line on stderr and an exit code; anything else goes to the log file, never as a traceback.
A reader that goes away (``smoltui runs | head -1``) ends the command quietly, like any Unix tool.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from smoltui.cli.parser import build_parser

log = logging.getLogger("smoltui")

COMMANDS: dict[str, str] = {
    "tui": "smoltui.cli.tui",
    "chat": "smoltui.cli.chat",
    "audit": "smoltui.cli.audit",
    "tools": "smoltui.cli.tools",
    "validate": "smoltui.cli.validate",
    "plan": "smoltui.cli.plan",
    "run": "smoltui.cli.workflows",
    "resume": "smoltui.cli.workflows",
    "runs": "smoltui.cli.workflows",
    "logs": "smoltui.cli.workflows",
    "models": "smoltui.cli.models",
    "bench": "smoltui.cli.bench",
    "db": "smoltui.cli.db",
    "serve": "smoltui.cli.serve",
    "web": "smoltui.cli.web",
    "show": "smoltui.cli.show",
    "approvals": "smoltui.cli.approvals",
    "approve": "smoltui.cli.approvals",
    "deny": "smoltui.cli.approvals",
}
"""Command name -> the module that runs it (without a command: the TUI)."""

CLOSED_PIPE_EXIT = 141  # 128 + SIGPIPE
"""What a shell reports for a command that a closed pipe stopped (``yes | head -1``)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from smoltui.errors import SmoltuiError

    try:
        module = importlib.import_module(COMMANDS[args.command or "tui"])
        code = module.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:  # `smoltui runs | head -1`: the reader has what it wanted
        discard_stdout()
        return CLOSED_PIPE_EXIT
    except SmoltuiError as error:
        print(f"smoltui: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("smoltui: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno != errno.ENOSPC:
            return _unexpected(args, error)
        where = f" writing {error.filename}" if error.filename else ""
        print(f"smoltui: the disk is full{where}; free some space and try again", file=sys.stderr)
        return 1
    except Exception as error:  # never a traceback on the terminal; the log file has it
        return _unexpected(args, error)


def _unexpected(args: object, error: Exception) -> int:
    """A bug, not something the user can fix: one line here, the traceback in the log file."""
    from smoltui.core import log_hint

    _log_to_file(args)
    log.error("unexpected error", exc_info=error)
    print(f"smoltui: unexpected error: {type(error).__name__}: {error}{log_hint()}", file=sys.stderr)
    return 1


def discard_stdout() -> None:
    """The reader of stdout went away: what is still buffered for it, and anything written later,
    goes to /dev/null, so no flush fails again (the interpreter's last one included)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # no real stdout (embedded, tests): nothing to flush
        pass


def _log_to_file(args: object) -> None:
    """A command that never opened the core has no log file yet, and with no handler at all
    ``logging`` would print the traceback on the terminal: send it to the log file."""
    root = logging.getLogger()
    if root.handlers:
        return
    try:
        from smoltui.cli.common import paths_of
        from smoltui.core import setup_logging

        setup_logging(paths_of(args))  # type: ignore[arg-type]
    except Exception:
        root.addHandler(logging.NullHandler())


__all__ = ["CLOSED_PIPE_EXIT", "COMMANDS", "discard_stdout", "main"]
