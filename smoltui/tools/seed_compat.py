"""The seed document's tool names, as thin adapters over our own tools.

The seed's ``data_analysis_workflow.yaml`` calls ``pandas_loader`` and ``matplotlib_chart``; these
adapters let it run as written. They reuse :mod:`smoltui.tools.data` and :mod:`smoltui.tools.chart`
(pandas, pyarrow and matplotlib: the optional ``data`` extra); without them :func:`seed_tools` is empty.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from smoltui.tools.base import Tool, ToolContext, ToolResult, tool

TOOL_ALIASES: dict[str, str] = {"pandas_loader": "load_data", "matplotlib_chart": "chart"}
"""Seed tool name → the smoltui tool it adapts."""


def available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("pandas", "pyarrow", "matplotlib"))


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


def seed_tools() -> list[Tool]:
    """The seed's tools, when pandas, pyarrow and matplotlib are installed; otherwise none."""
    return list(SEED_TOOLS)
