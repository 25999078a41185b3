"""Requests on a kept-alive TCP connection answer in milliseconds: the server's sockets have Nagle
off (without it every response waited ~40 ms for the client's delayed ACK)."""

from __future__ import annotations

import socket
import statistics
import time

import httpx

from server.harness import RunningServer
from smoltui.server.lifecycle import Listen, _bind_tcp

DELAYED_ACK_MS = 40.0


def test_accepted_connections_have_nagle_off() -> None:
    listener = _bind_tcp(Listen("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()[:2]):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_kept_alive_connection_is_not_held_by_delayed_acks(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}) as http:
        http.get("/health").raise_for_status()  # the connection is open and kept from here
        times = []
        for _ in range(20):
            started = time.perf_counter()
            http.get("/health").raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    # Nagle on: every one of these waits out the peer's delayed ACK, so even the median is >= 40 ms.
    assert statistics.median(times) < DELAYED_ACK_MS / 2, times
