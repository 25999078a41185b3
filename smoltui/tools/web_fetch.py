"""Fetch a web page and hand the model its readable text.

Guards, in order: the URL must be http(s) and its host allowed by the allow/deny lists; the response
must be a text type; at most ``max_bytes`` are read (the stream is cut there, never buffered whole);
redirects are followed only to hosts that pass the same check.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from smoltui.errors import SmoltuiError
from smoltui.tools.base import Tool, make_tool

TEXT_TYPES = ("text/html", "text/plain", "application/xhtml+xml", "application/json", "text/markdown", "text/csv")
DEFAULT_MAX_BYTES = 2_000_000
MAX_TEXT_CHARS = 20_000


class WebFetchError(SmoltuiError):
    pass


def host_allowed(host: str, allow: Sequence[str], deny: Sequence[str]) -> bool:
    """Deny wins; an empty allow list allows every host not denied. Patterns: fnmatch (*.example.org)."""
    host = host.lower().rstrip(".")
    if any(fnmatch.fnmatch(host, pattern.lower()) for pattern in deny):
        return False
    return not allow or any(fnmatch.fnmatch(host, pattern.lower()) for pattern in allow)


def extract_text(html: str) -> tuple[str, str]:
    """(title, readable text) of an HTML page: scripts, styles and navigation chrome dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg"]):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    lines = (line.strip() for line in root.get_text("\n").splitlines())
    return title, "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class Page:
    """A downloaded text page, at most ``max_bytes`` of it."""

    url: str  # after redirects
    content_type: str
    text: str
    truncated: bool

    @property
    def is_html(self) -> bool:
        return self.content_type in ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class PageFetcher:
    """Downloads text pages under one host policy; every tool that reaches the web goes through it."""

    allow: Sequence[str] = ()
    deny: Sequence[str] = ()
    timeout_s: float = 15.0
    max_bytes: int = DEFAULT_MAX_BYTES

    def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebFetchError(f"only http(s) URLs can be fetched, not {url!r}")
        if not host_allowed(parts.hostname, self.allow, self.deny):
            raise WebFetchError(f"{parts.hostname} is not on the allowed host list")

    async def get(self, url: str, *, agent: str = "smoltui web_fetch") -> Page:
        self.check(url)
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            for _ in range(6):
                async with client.stream("GET", url, headers={"User-Agent": agent}) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        self.check(url)
                        continue
                    if response.status_code >= 400:
                        raise WebFetchError(f"{url} answered HTTP {response.status_code}")
                    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if kind not in TEXT_TYPES:
                        raise WebFetchError(f"{url} is {kind or 'of no declared type'}, not a text page")
                    body, truncated = bytearray(), False
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            del body[self.max_bytes:]
                            truncated = True
                            break
                    text = body.decode(response.encoding or "utf-8", errors="replace")
                    return Page(url, kind, text, truncated)
        raise WebFetchError(f"too many redirects from {url}")


def make_web_fetch(
    *, allow: Sequence[str] = (), deny: Sequence[str] = (), timeout_s: float = 15.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Tool:
    """The ``web_fetch`` tool bound to a host policy (from the config)."""
    fetcher = PageFetcher(allow, deny, timeout_s, max_bytes)

    async def web_fetch(url: str) -> dict[str, Any]:
        """Download a web page and return its readable text.

        Args:
            url: The http or https address to fetch.
        """
        page = await fetcher.get(url)
        title, text, truncated = "", page.text, page.truncated
        if page.is_html:
            title, text = extract_text(text)
        if len(text) > MAX_TEXT_CHARS:
            text, truncated = text[:MAX_TEXT_CHARS], True
        return {"url": page.url, "title": title, "content_type": page.content_type, "text": text,
                "truncated": truncated}

    return make_tool(web_fetch, risk="network", timeout_s=timeout_s + 5)
