"""Charts from table artifacts, rendered off-screen with matplotlib into PNG artifacts."""

from __future__ import annotations

import uuid
from typing import Literal

from smoltui.errors import SmoltuiError
from smoltui.tools.base import Artifact, ToolContext, ToolResult, tool
from smoltui.tools.data import load_frame

MAX_POINTS = 100_000


class ChartError(SmoltuiError):
    pass


@tool(risk="read")
def chart(
    artifact: str,
    x: str,
    y: list[str] | None = None,
    kind: Literal["line", "bar", "scatter", "hist"] = "line",
    title: str | None = None,
    *,
    ctx: ToolContext,
) -> ToolResult:
    """Draw a chart of a table and save it as a PNG image.

    Args:
        artifact: The table's artifact id (from load_data or query_data).
        x: Column for the x axis (for hist: the column whose distribution is drawn).
        y: Columns for the y axis (not used by hist).
        kind: line, bar, scatter or hist.
        title: Title above the chart.
    """
    # The object-oriented API (Figure + Agg canvas) needs no display and no global pyplot state,
    # so charts can be drawn from worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame = load_frame(artifact, ctx)
    names = [x, *(y or [])]
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ChartError(f"unknown column(s) {', '.join(missing)}; the table has {', '.join(map(str, frame.columns))}")
    if kind != "hist" and not y:
        raise ChartError(f"a {kind} chart needs y columns")
    if len(frame) > MAX_POINTS:
        raise ChartError(f"{len(frame):,} rows is too many to draw; aggregate with query_data first")
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if kind == "hist":
        axes.hist(frame[x].dropna(), bins=30)
        axes.set_xlabel(x)
        axes.set_ylabel("count")
    else:
        for column in y or []:
            if kind == "line":
                axes.plot(frame[x], frame[column], label=column)
            elif kind == "bar":
                axes.bar(frame[x].astype(str), frame[column], label=column)
            else:
                axes.scatter(frame[x], frame[column], label=column, s=12)
        axes.set_xlabel(x)
        if len(y or []) > 1:
            axes.legend()
        elif y:
            axes.set_ylabel(y[0])
    if title:
        axes.set_title(title)
    figure.tight_layout()
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.artifacts_dir / f"chart-{uuid.uuid4().hex[:8]}.png"
    figure.savefig(path, format="png")
    summary = f"{kind} chart of {', '.join(y or [x])} by {x} ({len(frame)} rows), saved as {path.name}"
    return ToolResult(ok=True, content={"image": path.name, "summary": summary},
                      artifacts=(Artifact("image", path, "image/png", summary),))


CHART_TOOLS = [chart]
