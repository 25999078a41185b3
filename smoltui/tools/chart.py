"""Charts from table artifacts, rendered off-screen with matplotlib into PNG artifacts.

Readable by construction: several series are grouped bars side by side (never drawn over each
other), category and date labels are rotated and thinned until no two collide (measured with the
renderer, not guessed), and every chart has a title, both axis names and, for several series, a
legend.
"""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING, Any, Literal

from smoltui.errors import SmoltuiError
from smoltui.tools.base import Artifact, ToolContext, ToolResult, tool
from smoltui.tools.data import load_frame

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_POINTS = 100_000
BAR_GROUP_WIDTH = 0.8
"""The share of each category's slot its bars fill together; the rest is the gap between groups."""
MAX_LABELS = 60
"""At most this many category labels are tried before thinning them by measure."""
Kind = Literal["line", "bar", "scatter", "hist"]


class ChartError(SmoltuiError):
    pass


@tool(risk="read")
def chart(
    artifact: str,
    x: str,
    y: list[str] | None = None,
    kind: Kind = "line",
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    *,
    ctx: ToolContext,
) -> ToolResult:
    """Draw a chart of a table and save it as a PNG image.

    Args:
        artifact: The table's artifact id (from load_data or query_data).
        x: Column for the x axis (for hist: the column whose distribution is drawn).
        y: Columns for the y axis (not used by hist); several columns are drawn side by side.
        kind: line, bar, scatter or hist.
        title: Title above the chart (default: what is drawn against what).
        xlabel: Name of the x axis (default: the x column).
        ylabel: Name of the y axis (default: the y column, or "value" for several).
    """
    frame = load_frame(artifact, ctx)
    figure = draw_chart(frame, x, y, kind, title=title, xlabel=xlabel, ylabel=ylabel)
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.artifacts_dir / f"chart-{uuid.uuid4().hex[:8]}.png"
    figure.savefig(path, format="png")
    summary = f"{kind} chart of {', '.join(y or [x])} by {x} ({len(frame)} rows), saved as {path.name}"
    return ToolResult(ok=True, content={"image": path.name, "summary": summary},
                      artifacts=(Artifact("image", path, "image/png", summary),))


def draw_chart(frame: pd.DataFrame, x: str, y: list[str] | None = None, kind: Kind = "line", *,
               title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> Figure:
    """The chart as a matplotlib figure (drawn, labels thinned), ready to save."""
    # The object-oriented API (Figure + Agg canvas) needs no display and no global pyplot state,
    # so charts can be drawn from worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = list(y or [])
    missing = [c for c in [x, *series] if c not in frame.columns]
    if missing:
        raise ChartError(f"unknown column(s) {', '.join(missing)}; the table has {', '.join(map(str, frame.columns))}")
    if kind != "hist" and not series:
        raise ChartError(f"a {kind} chart needs y columns")
    if len(frame) > MAX_POINTS:
        raise ChartError(f"{len(frame):,} rows is too many to draw; aggregate with query_data first")
    # constrained layout makes room for rotated labels, the legend and the axis names.
    figure = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if kind == "hist":
        axes.hist(frame[x].dropna(), bins=30)
        default_y = "count"
        default_title = f"distribution of {x}"
    else:
        _draw_series(axes, frame, x, series, kind)
        default_y = series[0] if len(series) == 1 else "value"
        default_title = f"{', '.join(series)} by {x}"
    axes.set_xlabel(xlabel or x)
    axes.set_ylabel(ylabel or default_y)
    axes.set_title(title or default_title)
    if len(series) > 1:
        axes.legend()
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    _thin_x_labels(figure, axes)
    return figure


def _draw_series(axes: Axes, frame: pd.DataFrame, x: str, series: list[str], kind: Kind) -> None:
    import pandas as pd

    values = frame[x]
    dates = pd.api.types.is_datetime64_any_dtype(values)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if kind == "bar" or not (dates or numeric):
        # Categories (and a bar chart's dates) sit at 0..n-1 with their names as labels; each
        # series gets its own slice of the slot, so no bar hides another.
        labels = _category_labels(values)
        width = BAR_GROUP_WIDTH / len(series)
        for index, column in enumerate(series):
            if kind == "bar":
                offset = (index - (len(series) - 1) / 2) * width
                axes.bar([p + offset for p in range(len(labels))], frame[column], width=width, label=column)
            elif kind == "line":
                axes.plot(range(len(labels)), frame[column], label=column, marker="o", markersize=3)
            else:
                axes.scatter(range(len(labels)), frame[column], label=column, s=12)
        axes.set_xticks(range(len(labels)), labels)
        axes.set_xlim(-0.5, len(labels) - 0.5)
        return
    for column in series:
        if kind == "line":
            axes.plot(values, frame[column], label=column)
        else:
            axes.scatter(values, frame[column], label=column, s=12)
    if dates:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _category_labels(values: pd.Series) -> list[str]:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values)
        # Midnight everywhere: days are enough (the times would only widen every label).
        with_time = bool(((stamps - stamps.dt.normalize()) != pd.Timedelta(0)).any())
        return [s.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d") if pd.notna(s) else "" for s in stamps]
    return [str(v) for v in values]


def _thin_x_labels(figure: Figure, axes: Axes) -> None:
    """Rotate the x labels when they do not fit flat, then keep every k-th one until none overlap.

    Each try is measured with the renderer (a full draw, so it is the layout that is saved); the
    next step is estimated from how much the labels overlapped, so a chart takes a few draws.
    """
    from matplotlib.ticker import FixedLocator, MaxNLocator

    fixed = isinstance(axes.xaxis.get_major_locator(), FixedLocator)
    positions = list(axes.get_xticks())
    labels = [t.get_text() for t in axes.get_xticklabels()]
    # Hundreds of categories: start from a step that leaves about as many labels as could fit.
    step = max(1, math.ceil(len(positions) / MAX_LABELS)) if fixed else 1
    if step > 1:
        axes.set_xticks(positions[::step], labels[::step])
    rotated = False
    for _ in range(20):
        boxes = _label_boxes(figure, axes)
        if not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
            return
        if not rotated:
            rotated = True
            axes.tick_params(axis="x", labelrotation=45)
        else:
            # How many label widths fit between two neighbours now: thin by that much at once.
            spacing = (boxes[-1].x0 - boxes[0].x0) / max(1, len(boxes) - 1)
            crowding = max(b.width for b in boxes) * 1.15 / max(spacing, 1.0)
            if fixed:
                step = min(len(positions), max(step + 1, math.ceil(step * crowding)))
                axes.set_xticks(positions[::step], labels[::step])
            else:
                bins = max(2, min(len(boxes) - 1, math.floor(len(boxes) / crowding)))
                locator = axes.xaxis.get_major_locator()
                if hasattr(locator, "maxticks"):  # dates: fewer ticks, the same concise labels
                    locator.maxticks = dict.fromkeys(range(8), bins)
                else:
                    axes.xaxis.set_major_locator(MaxNLocator(nbins=bins))
        for label in axes.get_xticklabels():
            if rotated:  # the end of each label under its tick, not its middle
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
        if len(boxes) <= 2:
            return


def _label_boxes(figure: Figure, axes: Axes) -> list[Any]:
    """The window extents of the x labels shown, left to right, as the figure will be saved."""
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    figure.draw(renderer)
    boxes = [label.get_window_extent(renderer) for label in axes.get_xticklabels()
             if label.get_visible() and label.get_text()]
    return sorted(boxes, key=lambda box: box.x0)


CHART_TOOLS = [chart]
