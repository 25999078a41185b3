"""web_fetch against a hostile model: no address spelling, name, redirect or DNS answer reaches an internal address.

Every case runs through the registry, as the model's call would, against real loopback servers; name
resolution is replaced by one the test controls (``socket.getaddrinfo``), so nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smoltui.config import load_config
from smoltui.errors import ConfigError
from smoltui.tools.base import Tool, ToolContext, ToolResult
from smoltui.tools.registry import ToolRegistry
from smoltui.tools.web_fetch import MAX_REDIRECTS, REFUSAL_HINT, WebFetchError, make_web_fetch
from tests.fixtures.loopback_http import serving

SECRET = b"<html><head><title>secret</title></head><body><main>internal only</main></body></html>"
PUBLIC = b"<html><head><title>public</title></head><body><main>fine to read</main></body></html>"
ROUTES = {"/secret": (200, "text/html", SECRET), "/page": (200, "text/html", PUBLIC)}
REAL_GETADDRINFO = socket.getaddrinfo


def fetch(url: str, tool: Tool | None = None, **policy: object) -> ToolResult:
    """One call as the model makes it; pass ``tool`` to reuse one (building one loads the CA bundle)."""
    ctx = ToolContext(workspace=Path("."), artifacts_dir=Path("."))
    registry = ToolRegistry([tool or make_web_fetch(**policy)])  # type: ignore[arg-type]
    return asyncio.run(registry.call("web_fetch", {"url": url}, ctx))


@pytest.fixture(scope="module")
def internal() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """A server on 127.0.0.1 holding a secret: (its port, every request it got)."""
    seen: list[tuple[str, str]] = []
    with serving(ROUTES, seen=seen) as url:
        yield int(url.rsplit(":", 1)[1]), seen


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Callable[[], list[str]]]) -> list[str]:
    """Resolve the names in ``answers`` to the addresses each call returns; the others as usual. Returns the lookups."""
    lookups: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: ANN001, ANN202, A002
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return REAL_GETADDRINFO(host, port, family, type, proto, flags)
        lookups.append(name)
        out = []
        for address in answers[name]():
            kind = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, int(port), 0, 0) if kind == socket.AF_INET6 else (address, int(port))
            out.append((kind, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


# --------------------------------------------------------------------------- every spelling, refused


SPELLINGS = [
    ("http://127.0.0.1:{port}/secret", "127.0.0.1 is a loopback address"),
    ("http://127.1:{port}/secret", "127.1 is 127.0.0.1, a loopback address"),
    ("http://2130706433:{port}/secret", "2130706433 is 127.0.0.1, a loopback address"),
    ("http://0x7f000001:{port}/secret", "0x7f000001 is 127.0.0.1, a loopback address"),
    ("http://0177.0.0.1:{port}/secret", "0177.0.0.1 is 127.0.0.1, a loopback address"),
    ("http://127.0.0.1.:{port}/secret", "127.0.0.1. is 127.0.0.1, a loopback address"),
    ("http://localhost:{port}/secret", "localhost resolves to "),
    ("http://LOCALHOST.:{port}/secret", "localhost. resolves to "),
    ("http://api.localhost:{port}/secret", "api.localhost resolves to "),
    ("http://[::1]:{port}/secret", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]:{port}/secret", "an IPv4-mapped address of 127.0.0.1 (a loopback address)"),
    ("http://[0:0:0:0:0:ffff:7f00:1]:{port}/secret", "an IPv4-mapped address of 127.0.0.1 (a loopback address)"),
    ("http://[::ffff:8.8.8.8]/", "::ffff:8.8.8.8 is ::ffff:808:808, an IPv4-mapped address of 8.8.8.8"),
    ("https://127.0.0.1:{port}/secret", "127.0.0.1 is a loopback address"),
    ("http://0.0.0.0:{port}/secret", "0.0.0.0 is an unspecified address"),
    ("http://[::]:{port}/secret", ":: is an unspecified address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://100.64.0.1/", "100.64.0.1 is a shared (carrier-grade NAT) address"),
    ("http://0.1.2.3/", '0.1.2.3 is a "this network" address'),
    ("http://[fc00::1]/", "fc00::1 is a unique-local address"),
    ("http://[fd12:3456::1]/", "fd12:3456::1 is a unique-local address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fe80::1%25lo]:{port}/secret", "fe80::1%lo is a link-local address"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("http://[ff02::1]/", "ff02::1 is a multicast address"),
    ("http://240.0.0.1/", "240.0.0.1 is a reserved address"),
    ("http://255.255.255.255/", "255.255.255.255 is a reserved address"),
    ("http://[2002:7f00:1::]/", "a 6to4 address that carries 127.0.0.1 (a loopback address)"),
    ("http://[64:ff9b::a00:1]/", "a NAT64 address that carries 10.0.0.1 (a private address)"),
    ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "a Teredo address that carries 10.0.0.1 (a private address)"),
]


@pytest.mark.parametrize(("template", "why"), SPELLINGS, ids=[url for url, _ in SPELLINGS])
def test_internal_addresses_are_refused_in_every_spelling(
    template: str, why: str, internal: tuple[int, list[tuple[str, str]]]
) -> None:
    port, seen = internal
    before = len(seen)
    result = fetch(template.format(port=port))
    assert not result.ok and result.error_kind == "failed"
    assert why in result.error and REFUSAL_HINT in result.error, result.error
    if "localhost" in template:
        assert "a loopback address" in result.error
    assert len(seen) == before, "the request reached the internal server"


def test_the_refusal_names_host_address_and_reason() -> None:
    result = fetch("http://127.0.0.1/")
    assert result.error == (
        "web_fetch failed: WebFetchError: 127.0.0.1 is a loopback address; smoltui does not fetch from "
        "loopback, private or link-local addresses unless [tools] allows it "
        "(web_allow_networks, web_allow_private_hosts)"
    )


def test_numeric_junk_is_not_sent_to_a_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[object] = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: lookups.append(args) or [])
    result = fetch("http://999.1.1.1/")
    assert not result.ok and "'999.1.1.1' is neither an IP address nor a host name" in result.error
    assert lookups == []


# --------------------------------------------------------------------------- names


def test_a_name_that_resolves_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = fake_dns(monkeypatch, {"intranet.example": lambda: ["10.1.2.3"],
                                     "mixed.example": lambda: ["93.184.216.34", "192.168.0.7"],
                                     "metadata.example": lambda: ["fd00:ec2::254"]})
    result = fetch("http://intranet.example/wiki")
    assert not result.ok and "intranet.example resolves to 10.1.2.3, a private address" in result.error
    # Every address must pass, not just the first: one private answer among public ones is enough to refuse.
    mixed = fetch("http://mixed.example/")
    assert not mixed.ok and "mixed.example resolves to 192.168.0.7, a private address" in mixed.error
    v6 = fetch("https://metadata.example/")
    assert not v6.ok and "metadata.example resolves to fd00:ec2::254, a unique-local address" in v6.error
    assert lookups == ["intranet.example", "mixed.example", "metadata.example"]


def test_allowing_a_private_host_by_name(monkeypatch: pytest.MonkeyPatch,
                                        internal: tuple[int, list[tuple[str, str]]]) -> None:
    port, seen = internal
    fake_dns(monkeypatch, {"wiki.corp.example": lambda: ["127.0.0.1"], "evil.example": lambda: ["127.0.0.1"]})
    allowed = fetch(f"http://wiki.corp.example:{port}/page", allow_private_hosts=["*.corp.example"])
    assert allowed.ok, allowed.error
    assert allowed.content["title"] == "public" and allowed.content["url"] == f"http://wiki.corp.example:{port}/page"
    assert seen[-1] == ("/page", f"wiki.corp.example:{port}")  # the name, not the address, in Host
    other = fetch(f"http://evil.example:{port}/secret", allow_private_hosts=["*.corp.example"])
    assert not other.ok and "evil.example resolves to 127.0.0.1, a loopback address" in other.error


def test_allowing_a_network(internal: tuple[int, list[tuple[str, str]]]) -> None:
    port, _ = internal
    assert fetch(f"http://127.0.0.1:{port}/page", allow_networks=["127.0.0.0/8"]).ok
    assert fetch(f"http://127.1:{port}/page", allow_networks=["127.0.0.1"]).ok  # a single address
    assert fetch(f"http://[::ffff:127.0.0.1]:{port}/page", allow_networks=["127.0.0.0/8"]).ok
    narrow = fetch(f"http://127.0.0.1:{port}/page", allow_networks=["127.0.0.2/32", "10.0.0.0/8"])
    assert not narrow.ok and "127.0.0.1 is a loopback address" in narrow.error
    with pytest.raises(WebFetchError, match="is not an IP network"):
        make_web_fetch(allow_networks=["127.0.0.0/33"])


# --------------------------------------------------------------------------- redirects


def test_a_redirect_from_an_allowed_server_to_loopback_is_refused(
    monkeypatch: pytest.MonkeyPatch, internal: tuple[int, list[tuple[str, str]]]
) -> None:
    secret_port, seen = internal
    fake_dns(monkeypatch, {"allowed.test": lambda: ["127.0.0.2"], "sneaky.example": lambda: ["127.0.0.1"]})
    targets = {
        "/to-literal": f"http://127.0.0.1:{secret_port}/secret",
        "/to-short": f"http://127.1:{secret_port}/secret",
        "/to-name": f"http://sneaky.example:{secret_port}/secret",
        "/to-mapped": f"http://[::ffff:7f00:1]:{secret_port}/secret",
        "/to-metadata": "http://169.254.169.254/latest/meta-data/",
        "/to-file": "file:///etc/passwd",
        "/loop": "/loop",
    }
    with serving(ROUTES, targets, host="127.0.0.2") as url:
        port = url.rsplit(":", 1)[1]
        tool = make_web_fetch(allow_private_hosts=["allowed.test"])
        assert fetch(f"http://allowed.test:{port}/page", tool).ok  # the first hop is allowed
        before = len(seen)
        for path, why in [("/to-literal", "127.0.0.1 is a loopback address"),
                          ("/to-short", "127.1 is 127.0.0.1, a loopback address"),
                          ("/to-name", "sneaky.example resolves to 127.0.0.1, a loopback address"),
                          ("/to-mapped", "an IPv4-mapped address of 127.0.0.1"),
                          ("/to-metadata", "169.254.169.254 is a link-local address"),
                          ("/to-file", "only http(s) URLs can be fetched"),
                          ("/loop", f"more than {MAX_REDIRECTS} redirects")]:
            result = fetch(f"http://allowed.test:{port}{path}", tool)
            assert not result.ok and why in result.error, (path, result.error)
        assert len(seen) == before, "a redirect reached the internal server"


# --------------------------------------------------------------------------- the address that was checked


def test_dns_rebinding_cannot_swap_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name answers an allowed address to the check and an internal one afterwards: we stay on the first."""
    allowed_seen: list[tuple[str, str]] = []
    internal_seen: list[tuple[str, str]] = []
    with serving({"/page": (200, "text/html", PUBLIC)}, seen=allowed_seen) as url:
        port = int(url.rsplit(":", 1)[1])
        # The same port on another loopback address: what a second DNS answer would point at.
        with serving({"/page": (200, "text/html", SECRET)}, host="127.0.0.2", port=port, seen=internal_seen):
            answers = iter([["127.0.0.1"]])
            lookups = fake_dns(monkeypatch, {"rebind.example": lambda: next(answers, ["127.0.0.2"])})
            result = fetch(f"http://rebind.example:{port}/page", allow_networks=["127.0.0.1/32"])
    assert result.ok, result.error
    assert result.content["title"] == "public" and "internal only" not in result.content["text"]
    assert internal_seen == [] and allowed_seen == [("/page", f"rebind.example:{port}")]
    assert lookups == ["rebind.example"], "the name was resolved again after the check"


def _certificate(name: str, directory: Path) -> tuple[Path, Path]:
    pytest.importorskip("cryptography.x509")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_dials_the_checked_address_but_speaks_to_the_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SNI and the certificate check use the name (the certificate has no IP in it), the socket the address."""
    cert, key = _certificate("tea.example", tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    names: list[str | None] = []
    server.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment]
    client = ssl.create_default_context(cafile=str(cert))
    seen: list[tuple[str, str]] = []
    with serving(ROUTES, tls=server, seen=seen) as url:
        port = int(url.rsplit(":", 1)[1])
        lookups = fake_dns(monkeypatch, {"tea.example": lambda: ["127.0.0.1"]})
        result = fetch(f"https://tea.example:{port}/page", allow_networks=["127.0.0.1"], verify=client)
        assert result.ok, result.error
        assert names == ["tea.example"] and seen == [("/page", f"tea.example:{port}")]
        assert lookups == ["tea.example"]
        # The same server by its address: the certificate does not cover it, and that is not ignored.
        by_address = fetch(f"https://127.0.0.1:{port}/page", allow_networks=["127.0.0.1"], verify=client)
        assert not by_address.ok and "CERTIFICATE_VERIFY_FAILED" in by_address.error


# --------------------------------------------------------------------------- the config


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[tools]\nweb_allow_networks = ["127.0.0.0/8", "::1", "10.1.2.3"]\n'
                    'web_allow_private_hosts = ["wiki.corp.example"]\n')
    tools = load_config(path, {}).tools
    assert tools.web_allow_networks == ["127.0.0.0/8", "::1", "10.1.2.3"]
    assert tools.web_allow_private_hosts == ["wiki.corp.example"]
    assert [ipaddress.ip_network(n) for n in tools.web_allow_networks]
    path.write_text('[tools]\nweb_allow_networks = ["localhost"]\n')
    with pytest.raises(ConfigError, match=r"\[tools\] web_allow_networks: 'localhost' does not appear"):
        load_config(path, {})
    defaults = load_config(tmp_path / "missing.toml", {}).tools
    assert defaults.web_allow_networks == [] and defaults.web_allow_private_hosts == []
