"""data and chart tools on real files: pandas tables as Parquet artifacts, PNG charts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from smoltui.tools.base import ToolContext  # noqa: E402
from smoltui.tools.chart import CHART_TOOLS  # noqa: E402
from smoltui.tools.data import DATA_TOOLS  # noqa: E402
from smoltui.tools.registry import ToolRegistry  # noqa: E402

CSV = "city,month,sales\nLyon,1,10\nLyon,2,14\nParis,1,30\nParis,2,26\nNice,1,5\n"


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "sales.csv").write_text(CSV, encoding="utf-8")
    (workspace / "sales.json").write_text('[{"city": "Lyon", "sales": 1}]', encoding="utf-8")
    (workspace / "broken.csv").write_text('a,b\n"unterminated\n', encoding="utf-8")
    return ToolContext(workspace=workspace, artifacts_dir=tmp_path / "artifacts")


def call(ctx: ToolContext, name: str, **arguments):  # noqa: ANN003, ANN201
    registry = ToolRegistry([*DATA_TOOLS, *CHART_TOOLS])
    return asyncio.run(registry.call(name, arguments, ctx))


def test_load_csv_becomes_a_parquet_artifact_with_a_summary(ctx: ToolContext) -> None:
    import pandas as pd

    result = call(ctx, "load_data", path="sales.csv")
    assert result.ok and result.content["rows"] == 5 and result.content["columns"] == ["city", "month", "sales"]
    assert result.content["preview"][0] == {"city": "Lyon", "month": 1, "sales": 10}
    (artifact,) = result.artifacts
    assert artifact.kind == "dataframe" and artifact.path.suffix == ".parquet"
    assert "5 rows × 3 columns" in artifact.summary and "sales (int64)" in artifact.summary
    assert pd.read_parquet(artifact.path)["sales"].sum() == 85
    assert call(ctx, "load_data", path="sales.json").content["rows"] == 1


def test_describe(ctx: ToolContext) -> None:
    table = call(ctx, "load_data", path="sales.csv").content["artifact"]
    result = call(ctx, "describe_data", artifact=table)
    assert result.ok and result.content["rows"] == 5
    sales = next(c for c in result.content["columns"] if c["column"] == "sales")
    assert sales["mean"] == 17.0 and sales["max"] == 30.0


def test_filter_group_aggregate_sort(ctx: ToolContext) -> None:
    table = call(ctx, "load_data", path="sales.csv").content["artifact"]
    result = call(ctx, "query_data", artifact=table, where=[{"column": "sales", "op": ">", "value": 6}],
                  group_by=["city"], aggregate={"sales": "sum"}, sort_by="sales", descending=True)
    assert result.ok
    assert result.content["preview"] == [{"city": "Paris", "sales": 56}, {"city": "Lyon", "sales": 24}]
    contains = call(ctx, "query_data", artifact=table, where=[{"column": "city", "op": "contains", "value": "ic"}])
    assert [row["city"] for row in contains.content["preview"]] == ["Nice"]


def test_bad_input_is_named(ctx: ToolContext) -> None:
    table = call(ctx, "load_data", path="sales.csv").content["artifact"]
    unknown = call(ctx, "query_data", artifact=table, where=[{"column": "price", "op": ">", "value": 1}])
    assert not unknown.ok and "unknown column(s) price" in unknown.error
    assert "no table artifact named 'table-nope'" in call(ctx, "describe_data", artifact="table-nope").error
    assert "could not be read as csv" in call(ctx, "load_data", path="broken.csv").error
    assert "outside the workspace" in call(ctx, "load_data", path="../secret.csv").error
    bad_op = call(ctx, "query_data", artifact=table, where=[{"column": "city", "op": "like", "value": "x"}])
    assert not bad_op.ok and bad_op.error_kind == "invalid_arguments"


def test_chart_writes_a_png(ctx: ToolContext) -> None:
    table = call(ctx, "load_data", path="sales.csv").content["artifact"]
    result = call(ctx, "chart", artifact=table, x="month", y=["sales"], kind="bar", title="Sales")
    assert result.ok
    (artifact,) = result.artifacts
    assert artifact.kind == "image" and artifact.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bar chart of sales by month" in artifact.summary
    hist = call(ctx, "chart", artifact=table, x="sales", kind="hist")
    assert hist.ok
    missing = call(ctx, "chart", artifact=table, x="day", y=["sales"])
    assert not missing.ok and "unknown column(s) day" in missing.error
