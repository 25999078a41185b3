"""The command line: a stdlib-only parser (:mod:`smoltui.cli.parser`) and a table of command
modules, each imported only when its command runs, so ``--help`` and ``--version`` stay instant.

Every command module has ``run(args) -> int`` and gets what it needs from the core
(:mod:`smoltui.core`); none builds its own tools, policy or runner. Errors a user can act on are
one line on stderr and an exit code; anything else goes to the log file, never as a traceback.
"""

from __future__ import annotations

import importlib
import logging
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
}
"""Command name -> the module that runs it (without a command: the TUI)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from smoltui.errors import SmoltuiError

    try:
        module = importlib.import_module(COMMANDS[args.command or "tui"])
        return module.run(args)
    except SmoltuiError as error:
        print(f"smoltui: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("smoltui: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # never a traceback on the terminal; the log file has it
        from smoltui.core import log_hint

        log.exception("unexpected error")
        print(f"smoltui: unexpected error: {type(error).__name__}: {error}{log_hint()}", file=sys.stderr)
        return 1


__all__ = ["COMMANDS", "main"]
