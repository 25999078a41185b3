"""``smoltui serve``: this home's core behind HTTP (see :mod:`smoltui.server`).

- ``smoltui serve``: in the foreground until Ctrl+C or SIGTERM;
- ``smoltui serve --detach``: in the background, returning once it answers;
- ``smoltui serve status`` (exit 1 when none runs), ``smoltui serve stop``, ``smoltui serve token``;
- ``smoltui serve --install-unit [--force]``: a systemd user unit that runs it in the foreground.

The server's approvals are answered by its clients (the TUI, ``smoltui approve``, the API), so it
builds its core as a front end with people to ask, like the TUI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from smoltui.cli.common import paths_of, settings_of, when

NOT_RUNNING_EXIT = 1


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "serve_command", None)
    if command == "status":
        return _status(args)
    if command == "stop":
        return _stop(args)
    if command == "token":
        from smoltui.server.locations import ensure_token

        print(ensure_token(paths_of(args)))
        return 0
    if args.install_unit:
        return _install_unit(args)
    _check_installed()
    from smoltui.server.lifecycle import Listen, ServeOptions

    listen = Listen.parse(args.listen) if args.listen else None  # a bad value is refused before anything starts
    if args.detach:
        return _detach(args)
    from smoltui.server.lifecycle import ServerProcess

    workspace = Path(args.workspace).expanduser().resolve() if args.workspace else None
    settings = settings_of(args, headless=False, workspace=workspace)
    options = ServeOptions(listen=listen, cors_origins=tuple(args.cors_origin))
    asyncio.run(ServerProcess(settings, options).run())
    return 0


def _check_installed() -> None:
    import importlib.util

    from smoltui.errors import SmoltuiError

    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise SmoltuiError(f"`smoltui serve` needs {' and '.join(missing)}: pip install 'smoltui[serve]'")


UNIT_NAME = "smoltui.service"
UNIT_TEMPLATE = """\
# Written by `smoltui serve --install-unit`; `smoltui serve --install-unit --force` rewrites it.
[Unit]
Description=smoltui server: one core (model, store, runs, approvals) that terminals, scripts and browsers share

[Service]
Type=exec
ExecStart={exec_start}
# SIGTERM: the server stops taking requests, marks its runs interrupted (`smoltui resume` picks
# them up) and exits 0; a crash is restarted, a `systemctl --user stop` is not.
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=2

[Install]
WantedBy=default.target
"""


def unit_text(args: argparse.Namespace) -> str:
    """The unit for this install: this interpreter's ``smoltui serve`` with this command line's home,
    model and listen options, in the foreground (systemd keeps it, so never ``--detach``)."""
    import os
    import sys

    from smoltui.paths import HOME_ENV

    argv = [sys.executable, "-m", "smoltui", "serve"]
    home = getattr(args, "home", None) or os.environ.get(HOME_ENV)
    if home:
        argv += ["--home", str(Path(home).expanduser().resolve())]
    for option, value in (("--model", getattr(args, "model", None)), ("--backend", getattr(args, "backend", None)),
                          ("--threads", getattr(args, "threads", None)), ("--n-ctx", getattr(args, "n_ctx", None)),
                          ("--listen", args.listen), ("--workspace", args.workspace)):
        if value is not None:
            argv += [option, str(Path(value).expanduser().resolve()) if option == "--workspace" else str(value)]
    for origin in args.cors_origin:
        argv += ["--cors-origin", origin]
    return UNIT_TEMPLATE.format(exec_start=" ".join(_systemd_word(word) for word in argv))


def _systemd_word(word: str) -> str:
    """One ExecStart word as systemd reads it: ``%`` (a specifier) and ``$`` (a variable) doubled;
    quoted when it holds a space, a quote or a backslash."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not any(c in word for c in " \t\"'\\;"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_path() -> Path:
    import os

    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user" / UNIT_NAME


def _install_unit(args: argparse.Namespace) -> int:
    from smoltui.server.errors import ServeError

    if args.detach:
        raise ServeError("--install-unit writes a unit that runs the server in the foreground; drop --detach")
    path = unit_path()
    text = unit_text(args)
    if path.exists() and path.read_text(encoding="utf-8", errors="replace") != text and not args.force:
        raise ServeError(f"{path} exists and differs; --force replaces it")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)  # never a half-written unit
    print(f"smoltui: wrote {path}")
    print("start it now and at every login:  systemctl --user daemon-reload && systemctl --user enable --now smoltui")
    print("keep it running after you log out:  loginctl enable-linger $USER")
    print("follow its log:  journalctl --user -u smoltui -f")
    return 0


def _detach(args: argparse.Namespace) -> int:
    from smoltui.server.lifecycle import start_detached
    from smoltui.server.locations import read_state

    argv: list[str] = []
    for option, value in (("--home", getattr(args, "home", None)), ("--model", getattr(args, "model", None)),
                          ("--backend", getattr(args, "backend", None)), ("--threads", getattr(args, "threads", None)),
                          ("--n-ctx", getattr(args, "n_ctx", None)), ("--listen", args.listen),
                          ("--workspace", args.workspace)):
        if value is not None:
            argv += [option, str(Path(value).expanduser().resolve()) if option in ("--home", "--workspace")
                     else str(value)]
    for origin in args.cors_origin:
        argv += ["--cors-origin", origin]
    paths = paths_of(args)
    pid = start_detached(argv, paths)
    state = read_state(paths)
    where = f"unix:{state.socket}" + (f" and {state.url}" if state.url else "") if state else "its socket"
    print(f"smoltui: server started (pid {pid}) on {where}; `smoltui serve stop` stops it")
    return 0


def _status(args: argparse.Namespace) -> int:
    from smoltui.server.client import probe
    from smoltui.server.locations import read_state, running_pid, socket_path

    paths = paths_of(args)
    pid = running_pid(paths)
    state = read_state(paths) if pid is not None else None
    socket = Path(state.socket) if state is not None else socket_path(paths)
    health = probe(socket) if pid is not None else None
    if args.json:
        print(json.dumps({"running": pid is not None, "pid": pid, "socket": str(socket),
                          "url": state.url if state else None, "started_at": state.started_at if state else None,
                          "answering": health is not None, "health": health}, indent=2))
        return 0 if pid is not None else NOT_RUNNING_EXIT
    if pid is None:
        print(f"no server is running for {paths.data_dir}")
        return NOT_RUNNING_EXIT
    since = f" since {when(state.started_at)}" if state is not None else ""
    print(f"running (pid {pid}){since} for {paths.data_dir}")
    print(f"  socket: {socket}")
    if state is not None and state.url:
        print(f"  tcp:    {state.url} (bearer token: `smoltui serve token`)")
    if health is None:
        print("  not answering on its socket (starting, stopping, or stuck)")
        return 0
    model = health["model"]
    condition = "ready" if model["ready"] else (f"failed: {model['error']}" if model["error"] else "loading")
    print(f"  model:  {model['label']} ({condition})")
    print(f"  runs:   {len(health['runs_active'])} running; approvals waiting: {health['approvals_waiting']}")
    print(f"  up:     {_duration(health['uptime_s'])}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from smoltui.server.lifecycle import stop_server

    started = time.monotonic()
    pid = stop_server(paths_of(args))
    if pid is None:
        print(f"no server is running for {paths_of(args).data_dir}")
        return 0
    print(f"smoltui: server stopped (pid {pid}, {time.monotonic() - started:.1f} s)")
    return 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
