"""Fetch a web page and hand the model its readable text, without reaching into the user's network.

Guards, for the first URL and again for every redirect:

1. the URL must be http(s) and its host allowed by the allow/deny host patterns;
2. the host is resolved here: an IP literal in any spelling (``127.1``, ``2130706433``, ``0x7f000001``,
   ``0177.0.0.1``, ``[::ffff:127.0.0.1]``) is parsed as the address it means, a name goes through
   ``getaddrinfo`` and *every* address it returns must pass. Loopback, private, link-local,
   unique-local, multicast, unspecified, reserved, shared (100.64.0.0/10), "this network" (0.0.0.0/8),
   IPv4-mapped addresses and IPv6 addresses that carry a non-public IPv4 one (6to4, Teredo, NAT64)
   are refused, unless ``allow_networks`` holds the address or ``allow_private_hosts`` names the host;
3. the connection goes to the address that was checked: the request is sent to that IP with the
   original ``Host`` header, and for https the original name as SNI and for the certificate check, so
   a second DNS answer (DNS rebinding) cannot swap in another address. No proxy from the environment
   is used, for the same reason;
4. redirects are followed here, each hop checked as above, at most :data:`MAX_REDIRECTS` of them;
5. the response must be a text type; at most ``max_bytes`` are read (the stream is cut there).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

import httpx

from smoltui.errors import SmoltuiError
from smoltui.tools.base import Tool, make_tool

TEXT_TYPES = ("text/html", "text/plain", "application/xhtml+xml", "application/json", "text/markdown", "text/csv")
DEFAULT_MAX_BYTES = 2_000_000
MAX_TEXT_CHARS = 20_000
MAX_REDIRECTS = 5

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSAL_HINT = (
    "smoltui does not fetch from loopback, private or link-local addresses unless [tools] allows it "
    "(web_allow_networks, web_allow_private_hosts)"
)

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# The BSD spellings inet_aton accepts: one to four parts, each decimal, octal (0177) or hex (0x7f).
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}")
_BAD_NETLOC = re.compile(r"[\s\\\x00-\x1f\x7f]")


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


def ip_literal(host: str) -> Address | None:
    """The address an IP-literal host means, in any spelling; None for a name.

    Raises :class:`WebFetchError` for a host that looks numeric but is no address (``999.1.1.1``):
    no resolver is asked about it.
    """
    host = unquote(host).lower()
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise WebFetchError(f"{host!r} is not a valid IPv6 address") from None
    bare = host[:-1] if host.endswith(".") else host
    if not _LEGACY_IPV4.fullmatch(bare):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        raise WebFetchError(f"{host!r} is neither an IP address nor a host name") from None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.sixtofour is not None:
        found.append(("a 6to4 address", address.sixtofour))
    if address.teredo is not None:
        found += [("a Teredo address", address.teredo[0]), ("a Teredo address", address.teredo[1])]
    if address in _NAT64:
        found.append(("a NAT64 address", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def refusal(address: Address) -> str | None:
    """Why smoltui does not fetch from ``address`` ("a loopback address", ...); None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            inner = refusal(address.ipv4_mapped)
            return f"an IPv4-mapped address of {address.ipv4_mapped}" + (f" ({inner})" if inner else "")
        for kind, inner_address in _embedded_ipv4(address):
            inner = refusal(inner_address)
            if inner is not None:
                return f"{kind} that carries {inner_address} ({inner})"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _THIS_NETWORK, 'a "this network" address (0.0.0.0/8)'),
        (address in _SHARED, "a shared (carrier-grade NAT) address"),
        (address in _UNIQUE_LOCAL, "a unique-local address"),
        (getattr(address, "is_site_local", False), "a site-local address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((why for hit, why in checks if hit), None)


def parse_networks(values: Sequence[str | Network]) -> tuple[Network, ...]:
    """CIDR networks or single addresses (``127.0.0.0/8``, ``::1``, ``10.1.2.3``)."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError as error:
            raise WebFetchError(f"{value!r} is not an IP network: {error}") from None
    return tuple(networks)


@dataclass(frozen=True)
class Hop:
    """One URL, checked: where to connect and what to tell the server."""

    url: str
    parts: SplitResult
    host: str  # as written in the URL (lower case), for messages and the host patterns
    addresses: tuple[Address, ...]  # every one checked; the first that answers is used
    literal: bool  # the host is an IP address, not a name

    @property
    def host_header(self) -> str:
        if not self.literal:
            host = _ascii_name(self.host)
        else:
            address = self.addresses[0]
            host = f"[{str(address).split('%')[0]}]" if address.version == 6 else str(address)
        return f"{host}:{self.parts.port}" if self.parts.port is not None else host

    def pinned_url(self, address: Address) -> str:
        """The URL with its host replaced by ``address`` (userinfo, port, path and query kept)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # the same host, dialled as what it is
        userinfo, at, _ = self.parts.netloc.rpartition("@")
        host = f"[{str(address).replace('%', '%25')}]" if address.version == 6 else str(address)
        port = f":{self.parts.port}" if self.parts.port is not None else ""
        netloc = f"{userinfo}{at}{host}{port}"
        return urlunsplit((self.parts.scheme, netloc, self.parts.path or "/", self.parts.query, ""))

    def extensions(self) -> dict[str, Any]:
        if self.parts.scheme != "https" or self.literal:
            return {}
        return {"sni_hostname": _ascii_name(self.host).rstrip(".")}


def _ascii_name(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise WebFetchError(f"{host!r} is not a valid host name") from None


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
    """Downloads text pages under one host and address policy; every tool that reaches the web uses it."""

    allow: Sequence[str] = ()
    deny: Sequence[str] = ()
    timeout_s: float = 15.0
    max_bytes: int = DEFAULT_MAX_BYTES
    allow_networks: Sequence[str | Network] = ()  # reachable although loopback/private/link-local
    allow_private_hosts: Sequence[str] = ()  # host patterns whose addresses are not checked
    verify: ssl.SSLContext | bool = True  # TLS certificate check (a context with its own CA for tests)
    networks: tuple[Network, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", parse_networks(self.allow_networks))

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext:
        """Made once (loading the CA bundle takes a while), shared by the hops; honours SSL_CERT_FILE."""
        if isinstance(self.verify, ssl.SSLContext):
            return self.verify
        return httpx.create_ssl_context(verify=self.verify)

    def check(self, url: str) -> SplitResult:
        """The URL's parts if its scheme and host pass the host policy (addresses are checked later)."""
        try:
            parts = urlsplit(url)
            hostname, _ = parts.hostname, parts.port
        except ValueError as error:
            raise WebFetchError(f"{url!r} is not a valid URL: {error}") from None
        if parts.scheme not in ("http", "https") or not hostname:
            raise WebFetchError(f"only http(s) URLs can be fetched, not {url!r}")
        if _BAD_NETLOC.search(parts.netloc):
            raise WebFetchError(f"{url!r} is not a valid URL: its host part holds a space or a backslash")
        if not host_allowed(hostname, self.allow, self.deny):
            raise WebFetchError(f"{hostname} is not on the allowed host list")
        return parts

    def _address_allowed(self, host: str, address: Address) -> bool:
        if any(fnmatch.fnmatch(host.rstrip("."), pattern.lower().rstrip(".")) for pattern in self.allow_private_hosts):
            return True
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            candidates.append(ipaddress.IPv6Address(str(address).split("%")[0]))
        return any(c.version == n.version and c in n for c in candidates for n in self.networks)

    async def resolve(self, url: str) -> Hop:
        """Check ``url`` and resolve its host; every address must be public or allowed by the config."""
        parts = self.check(url)
        host = parts.hostname or ""
        literal = ip_literal(host)
        if literal is not None:
            addresses: tuple[Address, ...] = (literal,)
        else:
            addresses = await self._lookup(host, parts.port or (443 if parts.scheme == "https" else 80))
        for address in addresses:
            why = refusal(address)
            if why is None or self._address_allowed(host, address):
                continue
            if literal is None:
                subject = f"{host} resolves to {address}, {why}"
            elif unquote(host) != str(address):
                subject = f"{host} is {address}, {why}"
            else:
                subject = f"{address} is {why}"
            raise WebFetchError(f"{subject}; {REFUSAL_HINT}")
        return Hop(url, parts, host, addresses, literal is not None)

    async def _lookup(self, host: str, port: int) -> tuple[Address, ...]:
        name = _ascii_name(host)
        if name.rstrip(".") == "localhost" or name.rstrip(".").endswith(".localhost"):
            name = "localhost"  # RFC 6761: always loopback; the hosts file answers, not DNS
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, port, type=socket.SOCK_STREAM), timeout=self.timeout_s)
        except TimeoutError:
            raise WebFetchError(f"{host} could not be resolved within {self.timeout_s:g} s") from None
        except (socket.gaierror, UnicodeError) as error:
            raise WebFetchError(f"{host} could not be resolved: {error}") from None
        found: list[Address] = []
        for family, *_, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = ipaddress.ip_address(sockaddr[0])
            if address not in found:
                found.append(address)
        if not found:
            raise WebFetchError(f"{host} has no IP address")
        return tuple(found)

    @contextlib.asynccontextmanager
    async def _connect(self, client: httpx.AsyncClient, hop: Hop, agent: str) -> AsyncIterator[httpx.Response]:
        """The response from the first checked address that accepts a connection."""
        failure: Exception | None = None
        for address in hop.addresses:
            request = client.build_request("GET", hop.pinned_url(address), extensions=hop.extensions(),
                                           headers={"Host": hop.host_header, "User-Agent": agent})
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as error:
                failure = error
                continue
            try:
                yield response
            finally:
                await response.aclose()
            return
        tried = ", ".join(str(a) for a in hop.addresses)
        raise WebFetchError(f"cannot connect to {hop.host} ({tried}): {failure}")

    async def get(self, url: str, *, agent: str = "smoltui web_fetch") -> Page:
        for _ in range(MAX_REDIRECTS + 1):
            hop = await self.resolve(url)
            # A client per hop: a pooled connection must never carry a request for another host.
            async with (httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False,
                                          verify=self._tls) as client,
                        self._connect(client, hop, agent) as response):
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(hop.url, response.headers["location"])
                    continue
                return await self._read(hop.url, response)
        raise WebFetchError(f"more than {MAX_REDIRECTS} redirects, the last to {url}")

    async def _read(self, url: str, response: httpx.Response) -> Page:
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


def make_web_fetch(
    *, allow: Sequence[str] = (), deny: Sequence[str] = (), timeout_s: float = 15.0,
    max_bytes: int = DEFAULT_MAX_BYTES, allow_networks: Sequence[str] = (),
    allow_private_hosts: Sequence[str] = (), verify: ssl.SSLContext | bool = True,
) -> Tool:
    """The ``web_fetch`` tool bound to a host and address policy (from the config)."""
    fetcher = PageFetcher(allow, deny, timeout_s, max_bytes, allow_networks, allow_private_hosts, verify)

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
