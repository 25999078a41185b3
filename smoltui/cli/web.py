"""``smoltui web``: the same TUI in a browser, through textual-serve.

Each browser tab runs its own ``python -m smoltui`` with this home (textual-serve starts one
process per websocket), so a tab is one more front end: when ``smoltui serve`` runs for the home it
attaches to that server like a terminal would, and otherwise builds its core in-process as today.

textual-serve has no authentication: whoever reaches the port gets a TUI running as you, with your
files and your approvals. So it listens on loopback only, unless ``--public`` says otherwise; reach
it from another machine with ``ssh -L 8000:127.0.0.1:8000 HOST`` instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import shlex
import sys
from pathlib import Path
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def run(args: argparse.Namespace) -> int:
    from smoltui.server.errors import ServeError

    if not is_loopback(args.host) and not args.public:
        raise ServeError(f"--host {args.host} is reachable beyond this machine and textual-serve has no "
                         "authentication: anyone who reaches it gets a TUI running as you; use "
                         "`ssh -L 8000:127.0.0.1:8000 HOST` instead, or add --public if you mean it")
    if importlib.util.find_spec("textual_serve") is None:
        raise ServeError("`smoltui web` needs textual-serve: pip install 'smoltui[web]'")
    command = tui_command(args)
    server = _make_server(command, host=args.host, port=args.port, public_url=args.public_url)
    if not is_loopback(args.host):
        print(f"smoltui: warning: {args.host} is reachable beyond this machine and has no authentication",
              file=sys.stderr)
    server.serve()
    return 0


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: a host only this machine can reach."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def tui_command(args: argparse.Namespace) -> str:
    """The shell command each browser tab runs: this interpreter's ``smoltui`` with this command
    line's home and model options, so a tab opens the same home as ``smoltui web`` was given."""
    argv = [sys.executable, "-m", "smoltui"]
    home = getattr(args, "home", None)
    if home is not None:  # else SMOLTUI_HOME, if set, reaches the tab through the environment
        argv += ["--home", str(Path(home).expanduser().resolve())]
    for option, name in (("--model", "model"), ("--backend", "backend"), ("--threads", "threads"),
                         ("--n-ctx", "n_ctx")):
        value = getattr(args, name, None)
        if value is not None:
            argv += [option, str(value)]
    return shlex.join(argv)


def _make_server(command: str, *, host: str, port: int, public_url: str | None) -> Any:
    from textual_serve.server import Server

    class WebServer(Server):
        async def on_startup(self, app: Any) -> None:  # one line instead of textual-serve's banner
            print(f"smoltui: serving the TUI at {self.public_url} (one `smoltui` per browser tab; "
                  "Ctrl+C stops)", file=sys.stderr, flush=True)

    return WebServer(command, host=host, port=port, title="smoltui", public_url=public_url)
