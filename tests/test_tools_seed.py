"""The seed's tool names (filesystem, code_execution, web_scraping) run through our tools' checks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smoltui.tools.base import ToolContext
from smoltui.tools.registry import ToolRegistry
from smoltui.tools.seed_compat import SEED_ALIASES, make_web_scraping, seed_tools
from tests.fixtures.loopback_http import serving

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ["127.0.0.0/8"]  # the test server; web_scraping refuses loopback unless the config allows it

TEA = b"""<html><head><title>Tea list</title><script>var x = 1;</script></head><body>
<nav>Home</nav><main><h1>Teas</h1><ul>
<li class="tea">Sencha <b>80 C</b></li><li class="tea">Assam   <b>95 C</b></li><li class="coffee">Mocha</li>
</ul></main></body></html>"""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving({"/teas": (200, "text/html; charset=utf-8", TEA), "/plain": (200, "text/plain", b"just text")}) as url:
        yield url


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def ctx(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws, artifacts_dir=ws / "artifacts")


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(seed_tools())


def test_every_seed_name_is_offered_and_the_three_core_ones_need_no_data_extra() -> None:
    hide = "import sys; sys.modules.update(pandas=None, pyarrow=None, matplotlib=None); "
    show = "from smoltui.tools.seed_compat import seed_tools; print(' '.join(t.name for t in seed_tools()))"
    out = subprocess.run([sys.executable, "-c", hide + show], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["filesystem", "code_execution", "web_scraping"]
    names = {t.name for t in seed_tools()}
    assert names <= set(SEED_ALIASES) and {"filesystem", "code_execution", "web_scraping"} <= names


async def test_filesystem_write_is_a_write_and_read_and_list_are_reads(
    registry: ToolRegistry, ctx: ToolContext, ws: Path
) -> None:
    fs = registry.get("filesystem")
    assert fs.risk == "write"  # the highest any call can have, for whoever reads only this
    write = {"action": "write", "path": "notes/tea.txt", "content": "Sencha\n"}
    assert fs.risk_for(write) == "write"
    assert fs.risk_for({"action": "read", "path": "notes/tea.txt"}) == "read"
    assert fs.risk_for({"action": "list", "path": "notes"}) == "read"

    wrote = await registry.call("filesystem", write, ctx)
    assert wrote.ok, wrote.error
    assert (ws / "notes" / "tea.txt").read_text() == "Sencha\n"
    again = await registry.call("filesystem", {**write, "content": "Assam\n"}, ctx)
    assert again.ok and (ws / "notes" / "tea.txt").read_text() == "Assam\n"  # the seed's write replaces

    read = await registry.call("filesystem", {"action": "read", "path": "notes/tea.txt"}, ctx)
    assert read.ok and read.content["content"] == "Assam\n"
    listed = await registry.call("filesystem", {"action": "list", "path": "notes"}, ctx)
    assert listed.ok and [e["name"] for e in listed.content["entries"]] == ["tea.txt"]


async def test_filesystem_stays_in_the_workspace_and_says_what_is_wrong(
    registry: ToolRegistry, ctx: ToolContext, ws: Path
) -> None:
    outside = ws.parent / "secret.txt"
    outside.write_text("keep out")
    escaped = await registry.call("filesystem", {"action": "read", "path": "../secret.txt"}, ctx)
    assert not escaped.ok and "outside the workspace" in escaped.error
    sneaky = await registry.call("filesystem", {"action": "write", "path": "../secret.txt", "content": "x"}, ctx)
    assert not sneaky.ok and outside.read_text() == "keep out"
    empty = await registry.call("filesystem", {"action": "write", "path": "a.txt"}, ctx)
    assert not empty.ok and "needs content" in empty.error and not (ws / "a.txt").exists()
    bad = await registry.call("filesystem", {"action": "search", "path": "."}, ctx)
    assert not bad.ok and bad.error_kind == "invalid_arguments" and "action" in bad.error


async def test_code_execution_runs_python_in_the_sandbox_and_refuses_other_languages(
    registry: ToolRegistry, ctx: ToolContext, ws: Path
) -> None:
    item = registry.get("code_execution")
    assert item.risk == "execute" and item.risk_for({"code": "print(1)"}) == "execute"
    ran = await registry.call("code_execution", {"code": "open('out.txt', 'w').write('hi')\nprint(6 * 7)"}, ctx)
    assert ran.ok, ran.error
    assert ran.content["stdout"] == "42\n" and ran.content["exit_code"] == 0
    assert (ws / "out.txt").read_text() == "hi"  # it runs in the workspace, like python

    other = await registry.call("code_execution", {"code": "console.log(1)", "language": "javascript"}, ctx)
    assert not other.ok and other.error_kind == "invalid_arguments"
    assert "language" in other.error and "'python'" in other.error


async def test_web_scraping_picks_elements_with_a_css_selector(server: str, ctx: ToolContext) -> None:
    registry = ToolRegistry([make_web_scraping(allow_networks=LOOPBACK)])
    picked = await registry.call("web_scraping", {"url": f"{server}/teas", "selector": "li.tea"}, ctx)
    assert picked.ok, picked.error
    assert picked.content["title"] == "Tea list"
    assert picked.content["content"] == ["Sencha 80 C", "Assam 95 C"]
    whole = await registry.call("web_scraping", {"url": f"{server}/teas"}, ctx)
    assert whole.ok and "Sencha" in whole.content["content"] and "var x" not in whole.content["content"]
    assert registry.get("web_scraping").risk == "network"


async def test_web_scraping_has_the_web_fetch_host_checks_and_clear_errors(server: str, ctx: ToolContext) -> None:
    denied = ToolRegistry([make_web_scraping(deny=["127.0.0.1"], allow_networks=LOOPBACK)])
    refused = await denied.call("web_scraping", {"url": f"{server}/teas"}, ctx)
    assert not refused.ok and "127.0.0.1 is not on the allowed host list" in refused.error
    # The same address policy as web_fetch: loopback only where the config allows it.
    internal = await ToolRegistry(seed_tools()).call("web_scraping", {"url": f"{server}/teas"}, ctx)
    assert not internal.ok and "127.0.0.1 is a loopback address" in internal.error
    allowed = ToolRegistry(seed_tools(web_allow_networks=LOOPBACK))
    assert (await allowed.call("web_scraping", {"url": f"{server}/teas"}, ctx)).ok
    registry = ToolRegistry([make_web_scraping(allow_networks=LOOPBACK)])
    scheme = await registry.call("web_scraping", {"url": "file:///etc/passwd"}, ctx)
    assert not scheme.ok and "only http(s) URLs" in scheme.error
    broken = await registry.call("web_scraping", {"url": f"{server}/teas", "selector": "li["}, ctx)
    assert not broken.ok and "selector 'li[' is not valid CSS" in broken.error
    plain = await registry.call("web_scraping", {"url": f"{server}/plain", "selector": "p"}, ctx)
    assert not plain.ok and "not HTML" in plain.error
