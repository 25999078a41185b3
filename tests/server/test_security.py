"""Who gets in: the socket is private (0600 in a 0700 folder, checked at start), TCP needs the bearer
token (compared in constant time), no CORS headers unless asked for, the token file is private."""

from __future__ import annotations

import asyncio
import hmac
import os
import stat
from pathlib import Path

import httpx
import pytest
from tui.harness import scripted

from server.harness import RunningServer, error_of, private_runtime_dir, start_server
from smoltui.config import Config
from smoltui.core import Settings
from smoltui.paths import Paths
from smoltui.server import guards
from smoltui.server.errors import ServeError
from smoltui.server.lifecycle import Listen, ServeOptions, ServerProcess
from smoltui.server.locations import ensure_token, private_socket_dir, read_token, token_path


def test_tcp_without_a_token_is_refused_with_401(server: RunningServer) -> None:
    with server.tcp() as anonymous:
        for method, path in [("GET", "/health"), ("GET", "/api/chats"), ("POST", "/api/chats"),
                             ("GET", "/api/events"), ("GET", "/v1/models"), ("GET", "/api/no-such-thing")]:
            response = anonymous.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "bearer token is needed" in error_of(response)["message"]


def test_tcp_with_a_wrong_token_is_refused_and_compared_in_constant_time(
        server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(guards.hmac, "compare_digest", compare_digest)
    with server.tcp(token=server.token[:-1] + ("A" if server.token[-1] != "A" else "B")) as wrong, \
            server.tcp(headers={"Authorization": "Basic dXNlcjpwYXNz"}) as basic, server.tcp(token=server.token) as right:
        refused = wrong.post("/api/chats", json={"title": "should not exist"})
        other_scheme = basic.get("/api/chats")
        health = right.get("/health")
        chats = right.get("/api/chats").json()
    assert refused.status_code == 401 and "wrong" in error_of(refused)["message"]
    assert other_scheme.status_code == 401
    assert health.status_code == 200 and health.json()["transport"] == "tcp"
    assert all(chat["title"] != "should not exist" for chat in chats)
    assert compared and all(isinstance(a, bytes) for a, _ in compared)


def test_a_token_sent_over_the_socket_is_not_needed_and_not_checked(server: RunningServer) -> None:
    with server.unix(headers={"Authorization": "Bearer whatever"}) as api:
        assert api.get("/api/chats").status_code == 200


def test_no_cors_headers_by_default(server: RunningServer) -> None:
    origin = {"Origin": "http://evil.example"}
    with server.tcp(token=server.token) as api:
        simple = api.get("/api/chats", headers=origin)
        preflight = api.options("/api/chats", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert simple.status_code == 200
    for response in (simple, preflight):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], response.headers
    assert preflight.status_code != 200


def test_the_socket_is_private(server: RunningServer) -> None:
    socket_mode = server.socket.stat().st_mode
    folder_mode = server.socket.parent.stat().st_mode
    assert stat.S_ISSOCK(socket_mode) and stat.S_IMODE(socket_mode) == 0o600
    assert stat.S_IMODE(folder_mode) == 0o700
    assert server.socket.parent.stat().st_uid == os.getuid()


def _refused_start(home: Path) -> None:
    """Start a server that must be refused (if it starts anyway, it stops at once: no hang)."""
    settings = Settings(Config(), Paths.resolve(home), log_to_file=False, workspace=home, project_dir=home)
    process = ServerProcess(settings, backend=scripted(), say=lambda line: None)
    asyncio.run(process.run(ready=lambda served: process.stop()))
    pytest.fail("the server started")


def test_a_socket_folder_others_can_reach_is_refused_at_start(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = private_runtime_dir()
    (runtime / "smoltui").mkdir()
    (runtime / "smoltui").chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with pytest.raises(ServeError, match=r"can be reached by other users \(mode 0755\)"):
        _refused_start(tmp_path / "home")
    assert list((runtime / "smoltui").iterdir()) == []  # no socket was made
    assert not (tmp_path / "home" / "smoltui.db").exists()  # nor a core opened


def test_a_socket_folder_inside_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = private_runtime_dir()
    shared.chmod(0o777)  # world-writable without the sticky bit: our folder in it could be swapped
    with pytest.raises(ServeError, match="can be changed by other users"):
        private_socket_dir(shared / "smoltui")
    shared.chmod(0o777 | stat.S_ISVTX)  # like /tmp: others cannot touch what is ours
    assert private_socket_dir(shared / "smoltui") == shared / "smoltui"


def test_the_token_is_made_once_and_kept_private(tmp_path: Path) -> None:
    paths = Paths.resolve(tmp_path / "home")
    token = ensure_token(paths)
    assert len(token) >= 40 and ensure_token(paths) == token == read_token(paths)
    assert stat.S_IMODE(token_path(paths).stat().st_mode) == 0o600
    token_path(paths).chmod(0o644)
    with pytest.raises(ServeError, match="can be read by other users"):
        read_token(paths)


def test_a_second_server_for_the_same_home_is_refused(server: RunningServer) -> None:
    settings = Settings(Config(), Paths.resolve(server.home), log_to_file=False)
    second = ServerProcess(settings, backend=scripted(), say=lambda line: None)
    with pytest.raises(ServeError, match=r"already running for this home \(pid \d+\)"):
        asyncio.run(second.run())
    with server.unix() as api:  # the first one is untouched
        assert api.get("/health").status_code == 200


def test_tcp_beyond_loopback_needs_the_token_and_says_so_at_start(runtime_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    running = start_server(tmp_path, backend=scripted(), options=ServeOptions(listen=Listen("0.0.0.0", 0)),
                           say=lines.append)
    try:
        port = running.url.rsplit(":", 1)[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as anonymous:
            refused = anonymous.get("/api/chats")
    finally:
        running.stop()
    assert refused.status_code == 401
    assert any("every request needs the bearer token" in line for line in lines), lines
    assert any("0.0.0.0 is reachable beyond this machine" in line for line in lines), lines
