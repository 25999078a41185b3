"""``smoltui serve --install-unit``: a systemd user unit whose ExecStart really serves this home in
the foreground and stops cleanly on its KillSignal; an existing unit is never overwritten silently."""

from __future__ import annotations

import configparser
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from server.harness import one_line, smoltui
from smoltui.paths import Paths
from smoltui.server.client import probe
from smoltui.server.locations import socket_path
from tests.conftest import PYTHON

REPO = Path(__file__).resolve().parents[2]
SERVE_EXIT = 9


def _unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def test_the_unit_runs_this_homes_server_and_stops_on_its_kill_signal(env: dict[str, str], home: Path,
                                                                     tmp_path: Path) -> None:
    env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    written = smoltui(env, "serve", "--install-unit", "--model", "scripted")
    assert written.returncode == 0, written.stderr
    path = tmp_path / "xdg" / "systemd" / "user" / "smoltui.service"
    assert f"wrote {path}" in written.stdout and "systemctl --user enable --now smoltui" in written.stdout
    unit = _unit(path)
    assert unit["Service"]["Restart"] == "on-failure" and unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "default.target"
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv == [PYTHON, "-m", "smoltui", "serve", "--home", str(home), "--model", "scripted"]
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr

    # What systemd does with it: start ExecStart (no shell, no SMOLTUI_HOME), then send KillSignal.
    bare = {k: v for k, v in env.items() if k != "SMOLTUI_HOME"}
    server = subprocess.Popen(argv, env=bare, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline()
        health = probe(socket_path(Paths.resolve(home)))
        assert health is not None and health["home"] == str(home) and health["pid"] == server.pid
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0  # 0: Restart=on-failure leaves a stopped server stopped
    finally:
        if server.poll() is None:
            server.kill()


def test_an_existing_unit_is_replaced_only_with_force(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert smoltui(env, "serve", "--install-unit").returncode == 0
    path = tmp_path / "xdg" / "systemd" / "user" / "smoltui.service"
    before = path.read_text()
    assert smoltui(env, "serve", "--install-unit").returncode == 0  # the same unit again: nothing to refuse
    refused = smoltui(env, "serve", "--install-unit", "--listen", "127.0.0.1:8765")
    assert refused.returncode == SERVE_EXIT and "exists and differs; --force replaces it" in one_line(refused)
    assert path.read_text() == before
    forced = smoltui(env, "serve", "--install-unit", "--listen", "127.0.0.1:8765", "--force")
    assert forced.returncode == 0
    assert shlex.split(_unit(path)["Service"]["ExecStart"])[-2:] == ["--listen", "127.0.0.1:8765"]


def test_odd_characters_in_paths_reach_the_server_as_they_are(env: dict[str, str], tmp_path: Path) -> None:
    odd = tmp_path / 'my "h%me" $HOME'
    env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert smoltui(env, "serve", "--install-unit", "--home", str(odd)).returncode == 0
    exec_start = _unit(tmp_path / "xdg" / "systemd" / "user" / "smoltui.service")["Service"]["ExecStart"]
    assert "%%" in exec_start and "$$HOME" in exec_start  # systemd's specifiers and variables, escaped
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze to read the unit as systemd does")
    # systemd's own reading of the line: `systemd-analyze verify` accepts it
    verified = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "xdg" / "systemd" / "user" /
                                                                "smoltui.service")], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
