"""Helpers for the server tests: a real server (uvicorn on a Unix socket and loopback TCP, over a
real core in a temporary home) run in a thread of the test process, HTTP clients for both
transports, and a reader of server-sent events that waits for what it is told to, never by time.

Imported as ``server.harness`` (pytest puts ``tests/`` on the import path, as for ``tui.harness``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from smoltui.backends.base import Backend
from smoltui.config import Config
from smoltui.core import Settings
from smoltui.paths import Paths
from smoltui.server.client import SOCKET_BASE_URL
from smoltui.server.lifecycle import Listen, Served, ServeOptions, ServerProcess

APPENDING_WORKFLOW = """\
workflow:
  id: append-{name}
  name: Append {name}
  tasks:
    - id: write
      type: tool_call
      tool: python
      inputs:
        code: |
          with open("{name}.txt", "a") as out:
              out.write("ran\\n")
          print("wrote")
      outputs: [result]
"""
"""A workflow whose one task, a python call (risk: execute, so a person is asked), appends "ran" to
``NAME.txt`` in the run's workspace: how many times it ran is in that file."""

START_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 20.0


def private_runtime_dir() -> Path:
    """A short runtime folder (a Unix socket path must stay under 108 bytes), mode 0700."""
    folder = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    folder.chmod(0o700)
    return folder


@dataclass
class RunningServer:
    home: Path
    workspace: Path
    project: Path
    served: Served
    process: ServerProcess
    thread: threading.Thread

    @property
    def socket(self) -> Path:
        return self.served.socket

    @property
    def url(self) -> str:
        assert self.served.url is not None
        return self.served.url

    @property
    def token(self) -> str:
        assert self.served.token is not None
        return self.served.token

    def unix(self, **kwargs: Any) -> httpx.Client:
        """A client over the Unix socket (no token)."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url=SOCKET_BASE_URL,
                            timeout=httpx.Timeout(10.0, read=READ_TIMEOUT_S), **kwargs)

    def tcp(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """A client over TCP, sending ``token`` (none by default)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(10.0, read=READ_TIMEOUT_S),
                            **kwargs)

    def stop(self) -> None:
        self.process.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the server thread did not stop"


def start_server(root: Path, *, backend: Backend | None = None, config: Config | None = None,
                 model_spec: str | None = None, options: ServeOptions | None = None,
                 say: Callable[[str], None] | None = None) -> RunningServer:
    """A server over a new home under ``root``, in a thread with its own event loop; returns once
    it answers. XDG_RUNTIME_DIR must name a private folder (see :func:`private_runtime_dir`)."""
    home, workspace, project = root / "home", root / "workspace", root / "project"
    for folder in (home, workspace, project / "workflows"):
        folder.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = Config()
        config.chat.max_tokens = 256
    settings = Settings(config, Paths.resolve(home), model_spec=model_spec, log_to_file=False,
                        workspace=workspace, project_dir=project)
    options = options or ServeOptions(listen=Listen("127.0.0.1", 0))
    process = ServerProcess(settings, options, backend=backend, say=say or (lambda line: None))
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(process.run(ready=lambda served: ready.set()))
        except BaseException as error:  # reported by the waiting test, not lost in the thread
            failure.append(error)
        finally:
            ready.set()

    thread = threading.Thread(target=serve, name="smoltui server", daemon=True)
    thread.start()
    assert ready.wait(START_TIMEOUT_S), "the server did not start"
    if failure:
        raise failure[0]
    assert process.served is not None
    return RunningServer(home, workspace, project, process.served, process, thread)


@dataclass(frozen=True)
class Event:
    id: int | None
    kind: str
    data: dict[str, Any]


class EventReader:
    """Reads server-sent events from a streamed response, one at a time, as they come."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.read()
        self.response = response
        self.lines = response.iter_lines()
        self.seen: list[Event] = []
        self.last_id: int | None = None

    def next(self) -> Event:
        """The next event that has data (an id-only keep-alive moves ``last_id`` only)."""
        event_id: int | None = None
        kind = "message"
        data: list[str] = []
        for line in self.lines:
            if line == "":
                if event_id is not None:
                    self.last_id = event_id
                if data:
                    event = Event(event_id, kind, json.loads("\n".join(data)))
                    self.seen.append(event)
                    return event
                event_id, kind, data = None, "message", []
                continue
            if line.startswith(":") or line.startswith("retry:"):
                continue
            name, _, value = line.partition(": ")
            if name == "id":
                event_id = int(value)
            elif name == "event":
                kind = value
            elif name == "data":
                data.append(value)
        raise AssertionError("the event stream ended")

    def until(self, predicate: Callable[[Event], bool], what: str, *, limit: int = 5000) -> Event:
        """Read until an event matches (the read timeout fails a stream that goes quiet)."""
        for _ in range(limit):
            event = self.next()
            if predicate(event):
                return event
        raise AssertionError(f"no {what} in {limit} events")


@contextlib.contextmanager
def events(client: httpx.Client, path: str = "/api/events", **params: Any) -> Iterator[EventReader]:
    """The live event stream (``last_event_id`` resumes after that id), as an :class:`EventReader`."""
    headers = {}
    if "last_event_id" in params:
        headers["Last-Event-ID"] = str(params.pop("last_event_id"))
    with client.stream("GET", path, params={k: v for k, v in params.items() if v is not None},
                       headers=headers) as response:
        yield EventReader(response)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The API's error object, checking its shape: ``{"error": {"type", "message"}}``."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["type"], str) and body["error"]["message"], body
    return body["error"]


def smoltui(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m smoltui ARGS`` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "smoltui", *args], env=env, capture_output=True, text=True, timeout=timeout)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's one line of error (never a traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
