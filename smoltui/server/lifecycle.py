"""Running a server: one core for a home, behind uvicorn, on a private Unix socket (and TCP when
asked), until it is told to stop.

:class:`ServerProcess` does it in order: take the home's lock (a second server for the same home
is refused), check the socket's folder, open the core (store, model, tools, gate, runs), bind the
socket (mode 0600) and the TCP port (bearer token required), say where it listens, start loading
the model, serve. Stopping ends the event streams first (an open stream must not hold the exit
up), then uvicorn, then closes the core: runs still going are recorded as cancelled, resumable.

``smoltui serve`` runs it in the foreground (SIGTERM and Ctrl+C stop it); ``--detach`` starts that
in a new session and returns once the server answers ``/health`` (:func:`start_detached`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smoltui import __version__
from smoltui.paths import Paths
from smoltui.server.errors import ServeError
from smoltui.server.events import RING_SIZE
from smoltui.server.guards import MAX_BODY_BYTES
from smoltui.server.locations import (
    ServeLock,
    ServeState,
    check_socket_path,
    ensure_token,
    output_path,
    private_socket_dir,
    remove_state,
    running_pid,
    socket_path,
    write_state,
)

if TYPE_CHECKING:
    from smoltui.backends.base import Backend
    from smoltui.core import Core, Settings

log = logging.getLogger("smoltui.server")

STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Listen:
    """``--listen HOST:PORT`` (``[::1]:8080`` for IPv6; port 0: any free port)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ServeError(f"--listen: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
        return cls(host, int(port))

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class ServeOptions:
    listen: Listen | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    ring_size: int = RING_SIZE
    load_model: bool = True
    """Start loading the model at once (a first reply need not wait for it)."""


@dataclass(frozen=True)
class Served:
    """Where a started server listens."""

    pid: int
    socket: Path
    url: str | None
    token: str | None = field(repr=False)


def _uvicorn_server(config: Any) -> Any:
    """uvicorn's server without its own signal handling: ours ends the event streams first."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[override]  # noqa: ANN202
            yield

    return Server(config)


class ServerProcess:
    def __init__(self, settings: Settings, options: ServeOptions | None = None, *,
                 backend: Backend | None = None, say: Callable[[str], None] | None = None) -> None:
        """
        Args:
            settings: the core to serve (``approve`` None: clients answer the approvals).
            backend: replaces the configured model (tests, the benchmark).
            say: where start-up lines go (default: stderr).
        """
        self.settings = settings
        self.paths: Paths = settings.paths
        self.options = options or ServeOptions()
        self.backend = backend
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.core: Core | None = None
        self.served: Served | None = None
        self._server: Any = None
        self._app: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # -- stopping, from any thread ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop serving (safe from any thread and from a signal handler; idempotent)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stopping = True
            return
        if threading.current_thread() is threading.main_thread() and _running_loop() is loop:
            self._stop_now()
        else:
            loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        self._stopping = True
        if self._app is not None:
            self._app.state.smoltui.ring.close()
        if self._server is not None:
            self._server.should_exit = True

    # -- running ---------------------------------------------------------------------------------

    async def run(self, ready: Callable[[Served], None] | None = None) -> None:
        """Serve until :meth:`stop`; ServeError (nothing started) when it cannot."""
        self._loop = asyncio.get_running_loop()
        lock = ServeLock(self.paths)
        lock.acquire()
        sockets: list[socket.socket] = []
        path: Path | None = None
        try:
            path = socket_path(self.paths)
            check_socket_path(path)
            private_socket_dir(path.parent)
            listen = self.options.listen
            token = ensure_token(self.paths) if listen is not None else None
            sockets.append(_bind_unix(path))
            if listen is not None:
                sockets.append(_bind_tcp(listen))
            await self._serve(sockets, path, token, ready)
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            if path is not None and sockets:
                with contextlib.suppress(OSError):
                    path.unlink()
            remove_state(self.paths, os.getpid())
            lock.release()

    async def _serve(self, sockets: list[socket.socket], path: Path, token: str | None,
                     ready: Callable[[Served], None] | None) -> None:
        import uvicorn

        from smoltui.core import open_core
        from smoltui.server.app import create_app

        core = self.core = await open_core(self.settings, backend=self.backend)
        try:
            for problem in await core.start_tools():
                self.say(f"smoltui: warning: {problem}")
            if not core.model.available:  # history, runs and approvals still work; replies say why not
                self.say(f"smoltui: warning: no model to answer with: {core.model.load_error}")
            core.watcher.start()
            options = self.options
            self._app = create_app(core, token=token, socket_path=str(path), max_body_bytes=options.max_body_bytes,
                                   cors_origins=options.cors_origins, ring_size=options.ring_size)
            config = uvicorn.Config(self._app, log_config=None, log_level="warning", access_log=False,
                                    lifespan="on", ws="none", timeout_graceful_shutdown=3,
                                    timeout_keep_alive=30)
            self._server = _uvicorn_server(config)
            url = _url(sockets[1]) if len(sockets) > 1 else None
            self.served = Served(os.getpid(), path, url, token)
            with _signals(self.stop):
                if self._stopping:
                    return
                serving = asyncio.create_task(self._server.serve(sockets=sockets), name="uvicorn")
                await self._until_started(serving)
                write_state(self.paths, ServeState(os.getpid(), str(path), url, time.time(), __version__))
                self._announce(options.listen)
                if ready is not None:
                    ready(self.served)
                loading = asyncio.create_task(core.model.load()) if options.load_model else None
                await serving
                if loading is not None and not loading.done():
                    loading.cancel()
        finally:
            await core.close()

    async def _until_started(self, serving: asyncio.Task[None]) -> None:
        while not self._server.started:
            if serving.done():
                serving.result()  # its exception, or SystemExit from a failed lifespan
                raise ServeError("the server stopped while starting (details in the log file)")
            await asyncio.sleep(0.01)

    def _announce(self, listen: Listen | None) -> None:
        assert self.served is not None
        self.say(f"smoltui: serving {self.paths.data_dir} on unix:{self.served.socket} (pid {self.served.pid})")
        if self.served.url is not None:
            self.say(f"smoltui: and on {self.served.url}: every request needs the bearer token "
                     "(`smoltui serve token` shows it)")
            if listen is not None and not listen.loopback:
                self.say(f"smoltui: {listen.host} is reachable beyond this machine: only clients with the "
                         "token get in; use TLS in front of it (or an SSH tunnel) on an untrusted network")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@contextlib.contextmanager
def _signals(stop: Callable[[], None]):  # noqa: ANN202
    """SIGTERM and SIGINT stop the server (only the main thread can have signal handlers)."""
    loop = asyncio.get_running_loop()
    installed = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop)
                installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _bind_unix(path: Path) -> socket.socket:
    """The socket, mode 0600 from its first moment (umask), replacing a stale one (we hold the lock)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {path}: {error.strerror or error}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return sock


def _bind_tcp(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        sock = socket.create_server((listen.host, listen.port), family=family, backlog=128)
    except OSError as error:
        raise ServeError(f"cannot listen on {listen.host}:{listen.port}: {error.strerror or error}") from None
    # create_server makes the socket with proto 0, so asyncio does not turn Nagle off on the
    # connections it accepts (it only does so for proto IPPROTO_TCP): a response written in two
    # pieces (head, body) then waits for the client's delayed ACK, ~40 ms on every request of a
    # kept-alive connection. Linux hands the listener's TCP_NODELAY to each accepted socket.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- the other commands: start detached, stop, wait ------------------------------------------------


def start_detached(argv: Sequence[str], paths: Paths, *, timeout_s: float = START_TIMEOUT_S,
                   env: dict[str, str] | None = None) -> int:
    """Start ``python -m smoltui serve ARGV`` in a session of its own; its pid once it answers
    ``/health`` on its socket. ServeError with the server's own last line if it stopped instead."""
    from smoltui.server.client import probe

    pid = running_pid(paths)
    if pid is not None:
        raise ServeError(f"a server is already running for this home (pid {pid}); see `smoltui serve status`")
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    out = output_path(paths)
    with open(out, "wb") as sink:
        child = subprocess.Popen([sys.executable, "-m", "smoltui", "serve", *argv], stdin=subprocess.DEVNULL,
                                 stdout=sink, stderr=sink, start_new_session=True, env=env, close_fds=True)
    path = socket_path(paths)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            raise ServeError(_last_line(out) or f"the server exited with code {code} while starting")
        if path.exists() and probe(path, timeout_s=1.0) is not None:
            return child.pid
        time.sleep(0.05)  # a start-up wait on another process: nothing to be told by
    child.terminate()
    raise ServeError(f"the server did not answer within {timeout_s:g} s (its output: {out})")


def _last_line(path: Path) -> str | None:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line]
    if not lines:
        return None
    return lines[-1].removeprefix("smoltui: ")


def stop_server(paths: Paths, *, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM the home's server and wait for it to let go of its lock; its pid, or None when
    none was running. ServeError if it is still running after ``timeout_s``."""
    pid = running_pid(paths)
    if pid is None:
        return None
    if pid <= 0:
        raise ServeError("a server holds this home's lock but its pid is unknown; stop it by hand")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    except PermissionError:
        raise ServeError(f"the server (pid {pid}) belongs to another user") from None
    deadline = time.monotonic() + timeout_s
    while running_pid(paths) is not None:
        if time.monotonic() > deadline:
            raise ServeError(f"the server (pid {pid}) did not stop within {timeout_s:g} s; `kill -9 {pid}` ends it "
                             "(its runs are then marked interrupted, resumable)")
        time.sleep(0.05)  # waiting on another process's exit: there is no event to wait for
    return pid


__all__ = ["Listen", "ServeOptions", "Served", "ServerProcess", "start_detached", "stop_server"]
