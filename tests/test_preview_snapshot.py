"""Snapshots of the artifact preview at 80x24 and 160x45: a table (CSV) and a Markdown report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.pilot import Pilot
from tui.harness import build_app, open_store_now, ready, scripted, settle, wait_until

pytest.importorskip("pandas")

from smoltui.screens.preview import Previewable, PreviewScreen  # noqa: E402

SIZES = [(80, 24), (160, 45)]
REPORT = """\
# Weekly sales

North is **up 12%**; south is flat.

## Next steps

- restock the north warehouse
- ask the south team why

| region | sales |
|--------|------:|
| north  | 1,240 |
| south  |   980 |
"""


def _files(tmp_path: Path) -> tuple[Path, Path]:
    rows = "\n".join(f"2024-01-{day:02d},north,{100 + day},{3 * day}" for day in range(1, 31))
    table = tmp_path / "sales.csv"
    table.write_text("date,region,sales,returns\n" + rows + "\n")
    report = tmp_path / "report.md"
    report.write_text(REPORT)
    return table, report


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x45"])
@pytest.mark.parametrize("which", ["table", "markdown"])
def test_preview_screen(snap_compare, tmp_path: Path, size: tuple[int, int], which: str) -> None:
    table, report = _files(tmp_path)
    path = table if which == "table" else report
    store = open_store_now(tmp_path / "smoltui.db")

    async def show(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.app.push_screen(PreviewScreen(Previewable(path.name, path=path)))
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.kind == which, "the preview")
        await settle(pilot)
        await pilot.pause()

    try:
        app = build_app(store, scripted("unused"), tmp_path)
        assert snap_compare(app, terminal_size=size, run_before=show)
    finally:
        asyncio.run(store.close())
