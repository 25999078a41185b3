"""The seed document's tool names, as thin adapters over our own tools.

The seed's tool classes (``filesystem``, ``code_execution``, ``web_scraping``) and its
``data_analysis_workflow.yaml`` (``pandas_loader``, ``matplotlib_chart``) name tools that smoltui
offers under other names; these adapters let the seed's calls run as written, through the same
checks: ``filesystem`` is read_file / write_file / list_dir (confined to the workspace; a call's risk
is its action's), ``code_execution`` is the sandboxed ``python`` tool, ``web_scraping`` is
``web_fetch`` (same host policy) plus a CSS selector. Those three need nothing optional;
``pandas_loader`` and ``matplotlib_chart`` reuse :mod:`smoltui.tools.data` and
:mod:`smoltui.tools.chart` and appear only with the ``data`` extra (pandas, pyarrow, matplotlib).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from smoltui.tools.base import Risk, Tool, ToolContext, ToolResult, make_tool, tool
from smoltui.tools.filesystem import ToolError, list_dir, read_file, write_file
from smoltui.tools.python_exec import python
from smoltui.tools.web_fetch import (
    DEFAULT_MAX_BYTES,
    MAX_TEXT_CHARS,
    PageFetcher,
    WebFetchError,
    extract_text,
)

SEED_ALIASES: dict[str, str] = {
    "filesystem": "read_file / write_file / list_dir",
    "code_execution": "python",
    "web_scraping": "web_fetch",
    "pandas_loader": "load_data",
    "matplotlib_chart": "chart",
}
"""Every seed tool name → the smoltui tool(s) it adapts."""

TOOL_ALIASES: dict[str, str] = {name: SEED_ALIASES[name] for name in ("pandas_loader", "matplotlib_chart")}
"""The seed names that need the ``data`` extra (the tools in :data:`SEED_TOOLS`)."""

FILESYSTEM_RISKS: dict[str, Risk] = {"read": "read", "list": "read", "write": "write"}


def available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("pandas", "pyarrow", "matplotlib"))


def _filesystem_risk(arguments: Mapping[str, Any]) -> Risk:
    return FILESYSTEM_RISKS[arguments["action"]]


@tool(risk="write", name="filesystem", call_risk=_filesystem_risk)
def filesystem(
    action: Literal["read", "write", "list"], path: str, content: str | None = None, *, ctx: ToolContext
) -> dict[str, Any]:
    """Read, write or list files inside the workspace (the seed's name for read_file, write_file and list_dir).

    Args:
        action: read (a text file), write (content to a file, replacing it) or list (a directory).
        path: File or directory path, relative to the workspace root.
        content: The text to write; only for write.
    """
    if action == "read":
        return read_file.func(path, ctx=ctx)
    if action == "list":
        return list_dir.func(path, ctx=ctx)
    if content is None:
        raise ToolError("filesystem write needs content (the text to write)")
    # The seed's write replaces an existing file; the approval for a write-risk call covers that.
    return write_file.func(path, content, overwrite=True, ctx=ctx)


@tool(risk="execute", name="code_execution", timeout_s=python.timeout_s)
async def code_execution(code: str, language: Literal["python"] = "python", *, ctx: ToolContext) -> dict[str, Any]:
    """Run code in the sandbox and return what it printed (the seed's name for python; only Python runs).

    Args:
        code: The Python source to run; use print() to show results.
        language: The code's language; only python is supported.
    """
    return await python.func(code, timeout_s=30, ctx=ctx)


def make_web_scraping(
    *, allow: Sequence[str] = (), deny: Sequence[str] = (), timeout_s: float = 15.0,
    max_bytes: int = DEFAULT_MAX_BYTES, allow_networks: Sequence[str] = (),
    allow_private_hosts: Sequence[str] = (),
) -> Tool:
    """The seed's ``web_scraping`` tool, under the same host and address policy as ``web_fetch``."""
    fetcher = PageFetcher(allow, deny, timeout_s, max_bytes, allow_networks, allow_private_hosts)

    async def web_scraping(url: str, selector: str | None = None) -> dict[str, Any]:
        """Download a web page and return its text, or the text of each element a CSS selector picks (the seed's name for web_fetch).

        Args:
            url: The http or https address to fetch.
            selector: A CSS selector such as "h2.title" or "table td"; each matching element's text is one item.
        """
        page = await fetcher.get(url, agent="smoltui web_scraping")
        if selector is None:
            title, text = extract_text(page.text) if page.is_html else ("", page.text)
            cut = len(text) > MAX_TEXT_CHARS
            return {"url": page.url, "title": title, "content": text[:MAX_TEXT_CHARS],
                    "truncated": page.truncated or cut}
        if not page.is_html:
            raise WebFetchError(f"{page.url} is {page.content_type}, not HTML: a selector needs an HTML page")
        title, items, cut = _select(page.text, selector)
        return {"url": page.url, "title": title, "selector": selector, "content": items,
                "truncated": page.truncated or cut}

    return make_tool(web_scraping, risk="network", timeout_s=timeout_s + 5)


def _select(html: str, selector: str) -> tuple[str, list[str], bool]:
    """(title, the text of each element ``selector`` picks, whether the list was cut)."""
    from bs4 import BeautifulSoup
    from soupsieve import SelectorSyntaxError

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else ""
    try:
        elements = soup.select(selector)
    except SelectorSyntaxError as error:
        raise WebFetchError(f"selector {selector!r} is not valid CSS: {str(error).splitlines()[0]}") from None
    items: list[str] = []
    size = 0
    for element in elements:
        text = " ".join(element.get_text(" ").split())
        size += len(text)
        if size > MAX_TEXT_CHARS:
            return title, items, True
        items.append(text)
    return title, items, False


@tool(risk="read", name="pandas_loader")
def pandas_loader(file_path: str, *, ctx: ToolContext) -> ToolResult:
    """Load a CSV, JSON or Parquet file as a table (the seed's name for load_data).

    Args:
        file_path: File path relative to the workspace.
    """
    from smoltui.tools.data import load_data

    return load_data.func(file_path, ctx=ctx)


@tool(risk="read", name="matplotlib_chart")
def matplotlib_chart(
    data: Any,
    chart_type: Literal["line", "bar", "scatter", "hist"] = "bar",
    insights: Any = None,
    x: str | None = None,
    y: list[str] | None = None,
    *,
    ctx: ToolContext,
) -> ToolResult:
    """Draw a chart of a table and save it as a PNG (the seed's name for chart).

    Args:
        data: The table: its artifact id (table-…), a load_data result, or a DataFrame.
        chart_type: line, bar, scatter or hist.
        insights: Notes about the data; a short text becomes the chart's title.
        x: Column for the x axis (default: the first non-numeric column).
        y: Columns for the y axis (default: the numeric columns).
    """
    from smoltui.tools.chart import chart
    from smoltui.tools.data import DataToolError, load_frame, save_frame

    artifact = _artifact_id(data)
    if artifact is None:
        import pandas as pd

        if not isinstance(data, pd.DataFrame):
            raise DataToolError(f"data must be a table artifact id or a DataFrame, not {type(data).__name__}")
        saved = save_frame(data, ctx, "chart data")
        artifact = saved.content["artifact"]
    frame = load_frame(artifact, ctx)
    numeric = [str(c) for c in frame.select_dtypes("number").columns]
    if x is None:
        others = [str(c) for c in frame.columns if str(c) not in numeric]
        x = others[0] if others else str(frame.columns[0])
    if y is None and chart_type != "hist":
        y = [c for c in numeric if c != x]
    title = insights if isinstance(insights, str) and 0 < len(insights) <= 80 else None
    return chart.func(artifact=artifact, x=x, y=y, kind=chart_type, title=title, ctx=ctx)


def _artifact_id(data: Any) -> str | None:
    if isinstance(data, str):
        return data
    if isinstance(data, dict) and isinstance(data.get("artifact"), str):
        return data["artifact"]
    content = getattr(data, "content", None)  # a ToolResult
    if isinstance(content, dict) and isinstance(content.get("artifact"), str):
        return content["artifact"]
    return None


SEED_TOOLS: list[Tool] = [pandas_loader, matplotlib_chart] if available() else []
"""The seed's data tools, when pandas, pyarrow and matplotlib are installed; otherwise none."""


def seed_tools(
    *, web_allow: Sequence[str] = (), web_deny: Sequence[str] = (), web_allow_networks: Sequence[str] = (),
    web_allow_private_hosts: Sequence[str] = (),
) -> list[Tool]:
    """Every seed tool this installation can offer; ``web_scraping`` under the config's host and address lists."""
    scraping = make_web_scraping(allow=web_allow, deny=web_deny, allow_networks=web_allow_networks,
                                 allow_private_hosts=web_allow_private_hosts)
    return [filesystem, code_execution, scraping, *SEED_TOOLS]
