"""web_fetch against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from smoltui.tools.base import ToolContext
from smoltui.tools.registry import ToolRegistry
from smoltui.tools.web_fetch import host_allowed, make_web_fetch
from tests.fixtures.loopback_http import serving

PAGE = b"""<html><head><title>Tea notes</title><script>var tracking = 1;</script>
<style>p {color: red}</style></head><body><nav>Home | About</nav>
<main><h1>Green tea</h1><p>Steep at 80 degrees for two minutes.</p></main>
<footer>(c) nobody</footer></body></html>"""


ROUTES = {
    "/page": (200, "text/html; charset=utf-8", PAGE),
    "/plain": (200, "text/plain", b"just text"),
    "/image": (200, "image/png", b"\x89PNG...."),
    "/big": (200, "text/plain", b"a" * 500_000),
    "/missing": (404, "text/plain", b"nope"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(ROUTES, {"/hop": "/page", "/away": "http://blocked.example/"}) as url:
        yield url


def fetch(url: str, **policy):  # noqa: ANN003, ANN201
    """Call the tool; the loopback test server must be allowed explicitly, as a user would in [tools]."""
    policy.setdefault("allow_networks", ["127.0.0.0/8"])
    ctx = ToolContext(workspace=Path("."), artifacts_dir=Path("."))
    return asyncio.run(ToolRegistry([make_web_fetch(**policy)]).call("web_fetch", {"url": url}, ctx))


def test_readable_text_without_scripts_or_chrome(server: str) -> None:
    result = fetch(f"{server}/page")
    assert result.ok
    assert result.content["title"] == "Tea notes"
    assert result.content["text"] == "Green tea\nSteep at 80 degrees for two minutes."
    assert "tracking" not in result.content["text"] and "Home" not in result.content["text"]


def test_plain_text_and_redirects(server: str) -> None:
    assert fetch(f"{server}/plain").content["text"] == "just text"
    hop = fetch(f"{server}/hop")
    assert hop.ok and hop.content["url"].endswith("/page") and hop.content["title"] == "Tea notes"


def test_non_text_content_is_refused(server: str) -> None:
    result = fetch(f"{server}/image")
    assert not result.ok and "image/png, not a text page" in result.error


def test_size_limit_cuts_the_download(server: str) -> None:
    result = fetch(f"{server}/big", max_bytes=10_000)
    assert result.ok and result.content["truncated"] and len(result.content["text"]) == 10_000


def test_http_errors_are_reported(server: str) -> None:
    result = fetch(f"{server}/missing")
    assert not result.ok and "HTTP 404" in result.error


def test_deny_and_allow_lists(server: str) -> None:
    denied = fetch(f"{server}/page", deny=["127.0.0.1"])
    assert not denied.ok and "not on the allowed host list" in denied.error
    assert not fetch(f"{server}/page", allow=["*.example.org"]).ok
    assert fetch(f"{server}/page", allow=["127.0.0.1"]).ok
    # A redirect to a denied host is refused before it is followed.
    away = fetch(f"{server}/away", deny=["blocked.example"])
    assert not away.ok and "blocked.example is not on the allowed host list" in away.error
    assert host_allowed("docs.example.org", ["*.example.org"], [])
    assert not host_allowed("docs.example.org", ["*.example.org"], ["docs.*"])


def test_only_http_urls(server: str) -> None:
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "not a url"):
        result = fetch(url)
        assert not result.ok and "only http(s) URLs" in result.error


def test_timeout(server: str) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        result = fetch(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout_s=0.5)
    finally:
        silent.close()
    assert not result.ok and result.error_kind in ("failed", "timeout")
