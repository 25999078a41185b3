"""The chart tool draws charts people can read: grouped bars that never hide each other, category
and date labels that never collide, a title, both axis names and a legend for several series.

Checked on the figure matplotlib renders (the same layout the PNG is saved with), not on pixels.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from smoltui.tools.base import ToolContext  # noqa: E402
from smoltui.tools.chart import CHART_TOOLS, draw_chart  # noqa: E402
from smoltui.tools.data import DATA_TOOLS  # noqa: E402
from smoltui.tools.registry import ToolRegistry  # noqa: E402

DAYS = pd.date_range("2024-01-01", periods=30, freq="D")
SALES = pd.DataFrame({"date": DAYS.strftime("%Y-%m-%d"), "north": range(30), "south": range(30, 60),
                      "west": [v % 7 for v in range(30)]})


def label_boxes(figure):  # noqa: ANN001, ANN201
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    axes = figure.axes[0]
    return [t.get_window_extent(renderer) for t in axes.get_xticklabels() if t.get_visible() and t.get_text()]


def assert_no_label_collides(figure) -> None:  # noqa: ANN001
    boxes = label_boxes(figure)
    assert len(boxes) >= 3, "the labels were thinned to nothing"
    clashes = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert not clashes, f"{len(clashes)} pairs of x labels overlap"


@pytest.mark.parametrize("dates_as", ["text", "datetime"])
def test_three_series_over_thirty_dates_are_grouped_bars_whose_labels_do_not_collide(dates_as: str) -> None:
    frame = SALES if dates_as == "text" else SALES.assign(date=DAYS)
    figure = draw_chart(frame, "date", ["north", "south", "west"], "bar")
    axes = figure.axes[0]
    assert_no_label_collides(figure)
    # Every bar of one date stands beside the others: no two series share any x range.
    bars = [sorted((p.get_x(), p.get_x() + p.get_width()) for p in container.patches)
            for container in axes.containers]
    assert len(bars) == 3 and all(len(series) == 30 for series in bars)
    for day in range(30):
        spans = sorted(series[day] for series in bars)
        assert all(left[1] <= right[0] + 1e-9 for left, right in zip(spans, spans[1:], strict=False)), spans
    assert axes.get_title() == "north, south, west by date"
    assert axes.get_xlabel() == "date" and axes.get_ylabel() == "value"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["north", "south", "west"]
    if dates_as == "datetime":  # dates at midnight read as days, not as timestamps
        assert all(len(t.get_text()) == 10 for t in axes.get_xticklabels())


def test_a_line_chart_over_dates_has_readable_labels_and_the_names_asked_for() -> None:
    figure = draw_chart(SALES.assign(date=DAYS), "date", ["north", "south", "west"], "line",
                        title="Sales", xlabel="day", ylabel="units")
    axes = figure.axes[0]
    assert_no_label_collides(figure)
    assert (axes.get_title(), axes.get_xlabel(), axes.get_ylabel()) == ("Sales", "day", "units")
    assert len(axes.get_lines()) == 3 and axes.get_legend() is not None


def test_hundreds_of_long_categories_are_thinned_until_none_collide() -> None:
    frame = pd.DataFrame({"product": [f"product number {i:03d}" for i in range(120)], "sold": range(120)})
    figure = draw_chart(frame, "product", ["sold"], "bar")
    assert_no_label_collides(figure)
    axes = figure.axes[0]
    assert axes.get_ylabel() == "sold" and axes.get_legend() is None  # one series: its name is the axis


def test_the_tool_saves_the_readable_chart_as_a_png(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    SALES.to_csv(workspace / "sales.csv", index=False)
    ctx = ToolContext(workspace=workspace, artifacts_dir=tmp_path / "artifacts")
    registry = ToolRegistry([*DATA_TOOLS, *CHART_TOOLS])
    table = asyncio.run(registry.call("load_data", {"path": "sales.csv"}, ctx)).content["artifact"]
    result = asyncio.run(registry.call(
        "chart", {"artifact": table, "x": "date", "y": ["north", "south"], "kind": "bar", "ylabel": "units"}, ctx))
    assert result.ok, result.error
    png = result.artifacts[0].path
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "bar chart of north, south by date" in result.artifacts[0].summary
