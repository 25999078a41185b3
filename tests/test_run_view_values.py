"""How the run view shows a task's outputs: Markdown text, JSON, a table, an artifact's path."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from rich.markdown import Markdown
from rich.syntax import Syntax

from smoltui.screens.run_view import output_view


def rendered(renderable) -> str:
    console = Console(width=80, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_text_is_markdown_and_structures_are_json() -> None:
    assert isinstance(output_view("# Report\n\n- one"), Markdown)
    assert "• one" in rendered(output_view("# Report\n\n- one"))
    assert isinstance(output_view({"a": [1, 2]}), Syntax)
    assert '"a": [' in rendered(output_view({"a": [1, 2]}))
    assert "(empty)" in rendered(output_view("  "))


def test_a_path_is_shown_as_an_artifact(tmp_path: Path) -> None:
    text = rendered(output_view(tmp_path / "chart.png"))
    # A long temporary path wraps at 80 columns (where the name breaks depends on the test worker).
    assert text.startswith("artifact") and str(tmp_path / "chart.png") in text.replace("\n", "")


def test_a_table_shows_its_first_rows_and_its_size() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"region": [f"r{i}" for i in range(30)], "sales": range(30)})
    text = rendered(output_view(frame))
    assert "region" in text and "r0" in text and "r19" in text and "r20" not in text
    assert "30 rows × 2 columns (first 20 shown)" in text
