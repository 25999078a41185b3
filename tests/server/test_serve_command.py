"""``smoltui serve`` as a user runs it, in real processes: --detach returns once it answers, status
and stop do what they say, a second server for the same home is refused, SIGTERM stops a
foreground server cleanly, bad input is one line and an exit code."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
from pathlib import Path

from server.harness import one_line, smoltui
from smoltui.paths import Paths
from smoltui.server.client import probe
from smoltui.server.locations import socket_path
from tests.conftest import PYTHON

SERVE_EXIT = 9


def test_detach_status_second_server_and_stop(env: dict[str, str], home: Path) -> None:
    started = smoltui(env, "serve", "--detach", "--model", "scripted", "--listen", "127.0.0.1:0")
    assert started.returncode == 0, started.stderr
    assert "server started (pid" in started.stdout
    paths = Paths.resolve(home)
    sock = socket_path(paths)
    try:
        health = probe(sock)  # it answers as soon as --detach returned
        assert health is not None and health["home"] == str(home)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600

        status = smoltui(env, "serve", "status", "--json")
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)
        assert state["running"] and state["answering"] and state["pid"] == health["pid"]
        assert state["url"].startswith("http://127.0.0.1:") and state["health"]["model"]["label"] == "scripted"

        second = smoltui(env, "serve", "--model", "scripted")
        assert second.returncode == SERVE_EXIT
        assert f"already running for this home (pid {health['pid']})" in one_line(second)
        assert probe(sock) is not None  # the first one is untouched
    finally:
        stopped = smoltui(env, "serve", "stop")
    assert stopped.returncode == 0 and f"server stopped (pid {health['pid']}" in stopped.stdout
    assert not sock.exists()
    after = smoltui(env, "serve", "status")
    assert after.returncode == 1 and "no server is running" in after.stdout


def test_a_foreground_server_says_where_it_listens_and_stops_on_sigterm(env: dict[str, str], home: Path) -> None:
    server = subprocess.Popen([PYTHON, "-m", "smoltui", "serve", "--model", "scripted", "--listen", "0.0.0.0:0"],
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        lines = [server.stderr.readline() for _ in range(3)]
        assert "serving" in lines[0] and "unix:" in lines[0]
        assert "every request needs the bearer token" in lines[1]
        assert "0.0.0.0 is reachable beyond this machine: only clients with the token" in lines[2]
        assert probe(socket_path(Paths.resolve(home))) is not None
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        rest = server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
    assert "Traceback" not in rest
    assert not socket_path(Paths.resolve(home)).exists()


def test_bad_input_is_one_line_and_an_exit_code(env: dict[str, str], home: Path) -> None:
    listen = smoltui(env, "serve", "--listen", "nowhere")
    assert listen.returncode == SERVE_EXIT and "--listen: 'nowhere' is not HOST:PORT" in one_line(listen)
    folder = Path(env["XDG_RUNTIME_DIR"]) / "smoltui"
    folder.mkdir()
    folder.chmod(0o750)
    unsafe = smoltui(env, "serve", "--model", "scripted")
    assert unsafe.returncode == SERVE_EXIT and "can be reached by other users" in one_line(unsafe)


def test_the_token_is_shown_and_kept(env: dict[str, str], home: Path) -> None:
    first = smoltui(env, "serve", "token")
    second = smoltui(env, "serve", "token")
    assert first.returncode == 0 and first.stdout == second.stdout and len(first.stdout.strip()) >= 40
    assert stat.S_IMODE((home / "serve-token").stat().st_mode) == 0o600
