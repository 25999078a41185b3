"""``smoltui web``: the TUI drawn in a real headless Chromium through textual-serve, and a host
beyond loopback refused (textual-serve has no authentication)."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.harness import one_line, smoltui
from smoltui.cli.web import is_loopback, tui_command
from tests.conftest import PYTHON

REPO = Path(__file__).resolve().parents[2]
SERVE_EXIT = 9


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_a_browser_tab_draws_the_chat_screen(cli_env: dict[str, str]) -> None:
    pytest.importorskip("textual_serve")
    checked = subprocess.run([PYTHON, str(REPO / "benchmarks" / "web_check.py"), "--json", "--timeout", "45",
                              "--no-screenshot"], capture_output=True, text=True, timeout=58, env=cli_env)
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    # the chat's first hint and the status bar's model, read out of the page's xterm.js terminal
    assert "Type a message and press" in result["screen"]
    assert "scripted" in result["screen"].splitlines()[-2]


def test_a_host_beyond_loopback_is_refused_without_public(env: dict[str, str]) -> None:
    refused = smoltui(env, "web", "--host", "0.0.0.0")
    assert refused.returncode == SERVE_EXIT
    assert "textual-serve has no authentication" in one_line(refused) and "--public" in one_line(refused)
    assert [is_loopback(host) for host in ("127.0.0.1", "::1", "localhost", "[::1]", "0.0.0.0", "example.org")] \
        == [True, True, True, True, False, False]


def test_each_tab_runs_this_interpreters_smoltui_for_the_same_home(tmp_path: Path) -> None:
    args = argparse.Namespace(home=str(tmp_path / "my home"), model="scripted", n_ctx=2048)
    assert shlex.split(tui_command(args)) == [sys.executable, "-m", "smoltui", "--home", str(tmp_path / "my home"),
                                              "--model", "scripted", "--n-ctx", "2048"]
