"""Where a home's server listens and keeps its files, and the checks that keep them private.

Standard library and platformdirs only: the client and ``smoltui serve status`` import this without
loading the server.

- the Unix socket: ``<user runtime dir>/smoltui/serve-<digest of the data dir>.sock`` (one per
  home), mode 0600 in a folder of mode 0700 that the user owns;
- ``<data dir>/serve.lock``: held (``flock``) by the running server, with its pid in it;
- ``<data dir>/serve.json``: what the running server listens on (for ``status`` and clients);
- ``<config dir>/serve-token``: the bearer token TCP clients send, mode 0600.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoltui.paths import Paths
from smoltui.server.errors import ServeError

SOCKET_PATH_MAX = 107
"""The longest path a Unix socket can bind to on Linux (``sun_path`` is 108 bytes with its NUL)."""


def runtime_dir() -> Path:
    """The user's runtime folder for smoltui (``$XDG_RUNTIME_DIR/smoltui`` on Linux)."""
    import platformdirs

    with warnings.catch_warnings():  # "XDG_RUNTIME_DIR is not set, falling back to /tmp/runtime-UID"
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir("smoltui"))


def socket_path(paths: Paths) -> Path:
    """The Unix socket of the server for this home."""
    digest = hashlib.sha256(str(paths.data_dir.resolve()).encode()).hexdigest()[:12]
    return runtime_dir() / f"serve-{digest}.sock"


def lock_path(paths: Paths) -> Path:
    return paths.data_dir / "serve.lock"


def state_path(paths: Paths) -> Path:
    return paths.data_dir / "serve.json"


def token_path(paths: Paths) -> Path:
    return paths.config_dir / "serve-token"


def output_path(paths: Paths) -> Path:
    """Where a detached server's own stdout and stderr go (its start-up errors, mostly)."""
    return paths.data_dir / "serve.out"


# -- the socket's folder ---------------------------------------------------------------------------


def private_socket_dir(folder: Path) -> Path:
    """Make (or check) the socket's folder: owned by this user, mode 0700, its parent not open to
    others; ServeError saying what to fix otherwise. Nobody else may reach or replace the socket."""
    parent = folder.parent
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as error:
        raise ServeError(f"cannot make the socket folder {folder}: {error.strerror or error}") from None
    uid = os.getuid()
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ServeError(f"the socket folder {folder} is not a plain folder; remove it and start again")
    if info.st_uid != uid:
        raise ServeError(f"the socket folder {folder} belongs to another user (uid {info.st_uid}); "
                         "set XDG_RUNTIME_DIR to a folder of your own")
    if info.st_mode & 0o077:
        raise ServeError(f"the socket folder {folder} can be reached by other users (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 700 {folder}`")
    above = parent.stat()
    open_to_others = above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX
    if above.st_uid not in (uid, 0) or open_to_others:
        raise ServeError(f"the folder {parent} (above the socket folder) can be changed by other users; "
                         "set XDG_RUNTIME_DIR to a folder of your own")
    return folder


def check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise ServeError(f"the socket path {path} is longer than {SOCKET_PATH_MAX} bytes; "
                         "set XDG_RUNTIME_DIR to a shorter folder")


# -- the token -------------------------------------------------------------------------------------


def read_token(paths: Paths) -> str | None:
    """The bearer token, or None when none was made yet; ServeError when its file is open to others."""
    path = token_path(paths)
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_mode & 0o077:
        raise ServeError(f"the token file {path} can be read by other users (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}` or delete it for a new token")
    token = path.read_text(encoding="utf-8").strip()
    return token or None


def ensure_token(paths: Paths) -> str:
    """The bearer token, made on first use (32 random bytes, URL-safe) in a file only the user can read."""
    token = read_token(paths)
    if token is not None:
        return token
    path = token_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL with mode 0600: the file is never readable by others, not even for a moment.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by another process: use that one
        return read_token(paths) or token
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    return token


# -- the lock and the state file -------------------------------------------------------------------


class ServeLock:
    """The home's server lock: one ``flock`` on ``serve.lock``, held for the server's whole life
    (the kernel drops it when the process dies, even by ``kill -9``)."""

    def __init__(self, paths: Paths) -> None:
        self.path = lock_path(paths)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ServeError naming the server that has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            pid = _read_pid(self.path)
            raise ServeError(f"a server is already running for this home (pid {pid or '?'}); "
                             "see `smoltui serve status`, or stop it with `smoltui serve stop`") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def running_pid(paths: Paths) -> int | None:
    """The pid of the server running for this home, or None (nobody holds the lock)."""
    path = lock_path(paths)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file, or a data path that cannot hold one: no server
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                return _read_pid(path) or -1
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip() or 0) or None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class ServeState:
    """What a running server wrote about itself in ``serve.json``."""

    pid: int
    socket: str
    url: str | None
    """``http://HOST:PORT`` when it also listens on TCP."""
    started_at: float
    version: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_state(paths: Paths, state: ServeState) -> None:
    path = state_path(paths)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.as_dict(), indent=2), encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_state(paths: Paths) -> ServeState | None:
    """The running server's ``serve.json``; None when there is no server or no readable file."""
    try:
        data = json.loads(state_path(paths).read_text(encoding="utf-8"))
        return ServeState(int(data["pid"]), str(data["socket"]), data.get("url"), float(data["started_at"]),
                          str(data.get("version", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_state(paths: Paths, pid: int) -> None:
    """Remove ``serve.json`` if it is this server's (a newer server may have written its own)."""
    state = read_state(paths)
    if state is not None and state.pid == pid:
        with contextlib.suppress(OSError):
            state_path(paths).unlink()


__all__ = ["SOCKET_PATH_MAX", "ServeLock", "ServeState", "check_socket_path", "ensure_token", "lock_path",
           "output_path", "private_socket_dir", "read_state", "read_token", "remove_state", "running_pid",
           "runtime_dir", "socket_path", "state_path", "token_path", "write_state"]
