"""Reaching a server that is not this home's: ``SMOLTUI_SERVER`` names a socket or a port forwarded
with ``ssh -L`` (here a byte relay stands in for ssh, which this machine cannot run as a server),
and a home with no server of its own then uses that one instead of building a core."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.harness import RunningServer
from smoltui.errors import ConfigError
from smoltui.paths import Paths
from smoltui.server.client import ServerClient, ServerUnavailable
from smoltui.server.errors import ApiError


@contextlib.asynccontextmanager
async def forwarded(socket: Path, to: Path) -> AsyncIterator[Path]:
    """What ``ssh -L SOCKET:TO`` does: every connection to ``socket`` relayed, byte for byte, to ``to``."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        far_reader, far_writer = await asyncio.open_unix_connection(str(to))
        await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))

    server = await asyncio.start_unix_server(relay, path=str(socket))
    async with server:
        yield socket


async def test_a_forwarded_socket_is_used_instead_of_a_local_core(server: RunningServer, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    laptop = Paths.resolve(tmp_path / "laptop")  # a home with no server of its own
    assert ServerClient.for_home(laptop) is None
    async with forwarded(tmp_path / "fwd.sock", server.socket) as socket:
        monkeypatch.setenv("SMOLTUI_SERVER", f"unix:{socket}")
        client = ServerClient.for_home(laptop)
        assert client is not None
        async with client:
            assert (await client.health())["home"] == str(server.home)
            chat = await client.create_chat("over the tunnel")
            assert (await client.send_and_wait(chat["id"], "hi"))["ok"]


async def test_a_forwarded_port_needs_the_remote_token(server: RunningServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    laptop = Paths.resolve(tmp_path / "laptop")
    monkeypatch.setenv("SMOLTUI_SERVER", server.url)
    monkeypatch.setenv("SMOLTUI_TOKEN", server.token)
    client = ServerClient.for_home(laptop)
    assert client is not None
    async with client:
        assert (await client.health())["home"] == str(server.home)
    monkeypatch.setenv("SMOLTUI_TOKEN", "not-the-token")
    client = ServerClient.for_home(laptop)
    assert client is not None
    async with client:
        with pytest.raises(ApiError) as refused:
            await client.runs()
    assert refused.value.status == 401


async def test_a_named_server_that_is_gone_is_an_error_not_a_local_core(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOLTUI_SERVER", f"unix:{tmp_path / 'no-tunnel.sock'}")
    client = ServerClient.for_home(Paths.resolve(tmp_path / "laptop"))
    assert client is not None
    async with client:
        with pytest.raises(ServerUnavailable, match="cannot reach the smoltui server at unix:"):
            await client.health()
    monkeypatch.setenv("SMOLTUI_SERVER", "somehost:8765")
    with pytest.raises(ConfigError, match="neither unix:/path/to.sock nor an http:// URL"):
        ServerClient.for_home(Paths.resolve(tmp_path / "laptop"))
