import asyncio
import sqlite3
from pathlib import Path

import pytest

from smoltui.tools.base import ToolContext
from smoltui.tools.registry import ToolRegistry
from smoltui.tools.sql import SQL_TOOLS


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    db = sqlite3.connect(workspace / "shop.db")
    db.executescript(
        "create table items(id integer primary key, name text, price real, photo blob);"
        "insert into items(name, price, photo) values ('tea', 3.5, x'00ff'), ('cake', 4.0, null);"
    )
    db.executemany("insert into items(name, price) values (?, ?)", [(f"n{i}", i) for i in range(300)])
    db.commit()
    db.close()
    return ToolContext(workspace=workspace, artifacts_dir=tmp_path / "artifacts")


def call(ctx: ToolContext, **arguments):  # noqa: ANN003, ANN201
    return asyncio.run(ToolRegistry(SQL_TOOLS).call("sql_query", arguments, ctx))


def count_rows(ctx: ToolContext) -> int:
    return sqlite3.connect(ctx.workspace / "shop.db").execute("select count(*) from items").fetchone()[0]


def test_select_with_columns_and_blob_summary(ctx: ToolContext) -> None:
    result = call(ctx, database="shop.db", query="select name, price, photo from items order by id limit 2")
    assert result.ok
    assert result.content == {
        "columns": ["name", "price", "photo"],
        "rows": [["tea", 3.5, "<2 bytes>"], ["cake", 4.0, None]],
        "row_count": 2,
        "truncated": False,
    }


def test_row_limit(ctx: ToolContext) -> None:
    result = call(ctx, database="shop.db", query="select id from items", limit=50)
    assert result.content["row_count"] == 50 and result.content["truncated"] is True


@pytest.mark.parametrize(
    "query",
    [
        "delete from items",
        "update items set price = 0",
        "insert into items(name) values ('x')",
        "drop table items",
        "create table t(x)",
        "attach database 'other.db' as o",
        "pragma query_only = off",
        "select 1; delete from items",
    ],
)
def test_writes_are_refused_and_nothing_changes(ctx: ToolContext, query: str) -> None:
    before = count_rows(ctx)
    result = call(ctx, database="shop.db", query=query)
    assert not result.ok and result.error_kind == "failed"
    assert count_rows(ctx) == before
    assert not (ctx.workspace / "other.db").exists()


def test_database_outside_the_workspace_is_refused(ctx: ToolContext, tmp_path: Path) -> None:
    outside = tmp_path / "secret.db"
    sqlite3.connect(outside).execute("create table s(x)").connection.commit()
    for path in ("../secret.db", str(outside)):
        result = call(ctx, database=path, query="select * from s")
        assert not result.ok and "outside the workspace" in result.error


def test_missing_database_is_named(ctx: ToolContext) -> None:
    result = call(ctx, database="nope.db", query="select 1")
    assert not result.ok and "no database file at nope.db" in result.error
    assert not (ctx.workspace / "nope.db").exists()


def test_runaway_query_is_stopped(ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("smoltui.tools.sql.MAX_SECONDS", 0.5)
    query = "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c"
    result = call(ctx, database="shop.db", query=query)
    assert not result.ok and "was stopped" in result.error
