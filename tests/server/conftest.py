"""One real server per test session (per xdist worker): uvicorn on a Unix socket and loopback TCP,
over a real core (SQLite store, approval gate, run manager) in a temporary home, answering with the
scripted backend."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui.harness import scripted

from server.harness import RunningServer, private_runtime_dir, start_server
from smoltui.backends.scripted import ScriptedReply

REPLY = "Hello from the server."
THINKING = "Let me think about it."


@pytest.fixture(scope="session")
def runtime_dir() -> Iterator[Path]:
    """XDG_RUNTIME_DIR for the session: where the servers' sockets go (short and private)."""
    folder = private_runtime_dir()
    before = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = before
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def server(runtime_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("served"),
                           backend=scripted(ScriptedReply(REPLY, THINKING), delay_s=0.001))
    yield running
    running.stop()


@pytest.fixture
def env(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a ``smoltui`` process for this test's home, with a runtime folder of its own."""
    runtime = private_runtime_dir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # so this process finds the same socket
    return {**cli_env, "XDG_RUNTIME_DIR": str(runtime)}
