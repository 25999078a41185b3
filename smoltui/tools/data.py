"""Tabular data with pandas: load a file, describe it, filter and aggregate it.

Every table a tool produces is saved as a Parquet artifact in the run's artifact folder; the model
gets a short summary (shape, columns, first rows) and the artifact id to pass to the next tool
(``query_data``, ``chart``). Filters are structured (column, operator, value) rather than pandas
query strings, which can evaluate arbitrary expressions.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from smoltui.errors import SmoltuiError
from smoltui.tools.base import Artifact, ToolContext, ToolResult, tool
from smoltui.tools.filesystem import resolve_inside

if TYPE_CHECKING:
    import pandas as pd

MAX_FILE_BYTES = 200 * 1024 * 1024
PREVIEW_ROWS = 10
Aggregate = Literal["sum", "mean", "min", "max", "count", "median", "std", "nunique"]


class DataToolError(SmoltuiError):
    pass


class Condition(BaseModel):
    column: str
    op: Literal["==", "!=", "<", "<=", ">", ">=", "in", "contains"]
    value: Any


def save_frame(frame: pd.DataFrame, ctx: ToolContext, label: str) -> ToolResult:
    """Store ``frame`` as a Parquet artifact; the model sees its summary and a preview."""
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    artifact_id = f"table-{uuid.uuid4().hex[:8]}"
    path = ctx.artifacts_dir / f"{artifact_id}.parquet"
    frame.to_parquet(path)
    columns = ", ".join(f"{name} ({dtype})" for name, dtype in frame.dtypes.astype(str).items())
    summary = f"{label}: {len(frame)} rows × {len(frame.columns)} columns: {columns}"
    preview = frame.head(PREVIEW_ROWS).to_dict(orient="records")
    content = {"artifact": artifact_id, "rows": len(frame), "columns": list(map(str, frame.columns)),
               "preview": _jsonable(preview)}
    return ToolResult(ok=True, content=content,
                      artifacts=(Artifact("dataframe", path, "application/vnd.apache.parquet", summary),))


def load_frame(artifact: str, ctx: ToolContext) -> pd.DataFrame:
    """A table artifact by id (``table-1a2b3c4d``) from this run's artifact folder."""
    import pandas as pd

    name = Path(artifact).name.removesuffix(".parquet")
    path = ctx.artifacts_dir / f"{name}.parquet"
    if not name.startswith("table-") or not path.is_file():
        raise DataToolError(f"no table artifact named {artifact!r}; use the id a data tool returned")
    return pd.read_parquet(path)


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


@tool(risk="read")
def load_data(path: str, *, ctx: ToolContext) -> ToolResult:
    """Load a CSV, JSON or Parquet file from the workspace as a table.

    Args:
        path: File path relative to the workspace (.csv, .tsv, .json, .jsonl or .parquet).
    """
    import pandas as pd

    target = resolve_inside(ctx.workspace, path)
    if not target.is_file():
        raise DataToolError(f"no file at {path} in the workspace")
    size = target.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataToolError(f"{path} is {size / 1e6:,.0f} MB; the limit is {MAX_FILE_BYTES / 1e6:,.0f} MB")
    suffix = target.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(target)
        elif suffix == ".tsv":
            frame = pd.read_csv(target, sep="\t")
        elif suffix == ".json":
            frame = pd.read_json(target)
        elif suffix == ".jsonl":
            frame = pd.read_json(target, lines=True)
        elif suffix == ".parquet":
            frame = pd.read_parquet(target)
        else:
            raise DataToolError(f"{path}: unsupported file type {suffix or '(none)'}; use csv, tsv, json, jsonl or parquet")
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise DataToolError(f"{path} could not be read as {suffix[1:]}: {error}") from None
    return save_frame(frame, ctx, f"loaded {path}")


@tool(risk="read")
def describe_data(artifact: str, *, ctx: ToolContext) -> dict[str, Any]:
    """Summary statistics of a table: count, mean, spread and quartiles per numeric column, top values otherwise.

    Args:
        artifact: The table's artifact id, as returned by load_data or query_data.
    """
    frame = load_frame(artifact, ctx)
    stats = frame.describe(include="all").transpose()
    return {"rows": len(frame), "columns": _jsonable(stats.reset_index(names="column").to_dict(orient="records")),
            "missing": {str(k): int(v) for k, v in frame.isna().sum().items() if v}}


@tool(risk="read")
def query_data(
    artifact: str,
    where: list[Condition] | None = None,
    columns: list[str] | None = None,
    group_by: list[str] | None = None,
    aggregate: dict[str, Aggregate] | None = None,
    sort_by: str | None = None,
    descending: bool = False,
    limit: int | None = None,
    *,
    ctx: ToolContext,
) -> ToolResult:
    """Filter, select, group and aggregate a table; the result is a new table artifact.

    Args:
        artifact: The table's artifact id.
        where: Conditions that must all hold, e.g. [{"column": "price", "op": ">", "value": 3}].
        columns: Keep only these columns.
        group_by: Group rows by these columns (use with aggregate).
        aggregate: Column to function (sum, mean, min, max, count, median, std, nunique).
        sort_by: Sort by this column.
        descending: Sort from largest to smallest.
        limit: Keep at most this many rows.
    """
    frame = load_frame(artifact, ctx)
    wanted = set(columns or []) | set(group_by or []) | set(aggregate or {}) | {c.column for c in where or []}
    if sort_by:
        wanted.add(sort_by)
    missing = sorted(wanted - set(map(str, frame.columns)))
    if missing and not (sort_by in (aggregate or {}) and missing == [sort_by]):
        raise DataToolError(f"unknown column(s) {', '.join(missing)}; the table has {', '.join(map(str, frame.columns))}")
    for condition in where or []:
        series = frame[condition.column]
        ops = {
            "==": lambda s, v: s == v, "!=": lambda s, v: s != v, "<": lambda s, v: s < v,
            "<=": lambda s, v: s <= v, ">": lambda s, v: s > v, ">=": lambda s, v: s >= v,
            "in": lambda s, v: s.isin(v if isinstance(v, list) else [v]),
            "contains": lambda s, v: s.astype(str).str.contains(str(v), regex=False),
        }  # fmt: skip
        try:
            frame = frame[ops[condition.op](series, condition.value)]
        except TypeError as error:
            raise DataToolError(f"cannot compare {condition.column} {condition.op} {condition.value!r}: {error}") from None
    if group_by:
        if not aggregate:
            raise DataToolError("group_by needs aggregate, e.g. {\"price\": \"mean\"}")
        frame = frame.groupby(group_by, dropna=False).agg(aggregate).reset_index()
    elif aggregate:
        frame = frame.agg(aggregate).to_frame("value").reset_index(names="column")
    if columns:
        frame = frame[[c for c in columns if c in frame.columns]]
    if sort_by and sort_by in frame.columns:
        frame = frame.sort_values(sort_by, ascending=not descending)
    if limit is not None:
        frame = frame.head(max(0, limit))
    return save_frame(frame.reset_index(drop=True), ctx, "query result")


DATA_TOOLS = [load_data, describe_data, query_data]
