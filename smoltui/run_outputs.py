"""A run's outputs as people read them, written once for every front end: the run view (Textual),
``smoltui show`` and the end of ``smoltui run``, in-process or through the server.

Stored outputs keep artifacts (tables, files, bytes) as references into the run's folder. A client
gets them *described* (:func:`describe`): each reference with its download link and, for a table,
its first rows. The command line renders that description whichever side made it, so the
in-process and the served commands print the same thing. No Textual here; Rich only.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from smoltui.orchestrator.run_store import ARTIFACT_KEY

PREVIEW_ROWS = 50
"""Rows of a table a description carries."""
SHOWN_ROWS = 20
"""Rows of a table shown on screen."""
RUN_END_LINES = 12
"""Lines of each output ``smoltui run`` prints at its end (``smoltui show`` prints them all)."""


# -- descriptions (plain JSON values) -------------------------------------------------------------


def describe(run_id: str, value: Any, runs_dir: Path | None = None, preview: bool = False) -> Any:
    """Stored outputs for a client: an artifact reference gets its download link (when the file is
    in the run's folder) and, with ``preview``, a table its first rows."""
    if isinstance(value, dict):
        kind = value.get(ARTIFACT_KEY)
        if kind is None:
            return {k: describe(run_id, v, runs_dir, preview) for k, v in value.items()}
        described = dict(value)
        path = value.get("path")
        if isinstance(path, str) and kind != "path":
            described["download"] = f"/api/runs/{quote(run_id)}/files?path={quote(path)}"
        if preview and kind == "dataframe" and isinstance(path, str) and runs_dir is not None:
            described["preview"] = table_preview(Path(path), runs_dir / run_id)
        return described
    if isinstance(value, list):
        return [describe(run_id, v, runs_dir, preview) for v in value]
    return value


def table_preview(path: Path, folder: Path) -> dict[str, Any] | None:
    """``{columns, rows, shape}`` of a stored table inside ``folder`` (None: outside, or unreadable)."""
    if inside(path, folder) is None:
        return None
    try:
        import pandas as pd

        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".pkl":
            frame = pd.read_pickle(path)  # written by this run's own task (see run_store), never uploaded
        else:
            return None
    except Exception:  # no pandas, or a file it cannot read: the path is still there
        return None
    # pandas writes every cell as JSON (dates as ISO text, anything odd as its str)
    rows = json.loads(frame.head(PREVIEW_ROWS).to_json(orient="values", date_format="iso", default_handler=str))
    return {"columns": [str(c) for c in frame.columns], "rows": rows, "shape": list(frame.shape)}


def inside(path: Path, folder: Path) -> Path | None:
    """``path`` with every link and ``..`` resolved, if that lies inside ``folder``; else None.
    (Judged without asking whether the file exists, so a refusal says nothing about other files.)"""
    try:
        resolved, root = path.resolve(), folder.resolve()
    except (OSError, RuntimeError):  # a link loop
        return None
    return resolved if resolved.is_relative_to(root) and resolved != root else None


def final_tasks(file: str | Path | None, task_ids: Sequence[str]) -> list[str]:
    """The tasks nothing depends on (what a run made, as opposed to its steps), in ``task_ids``'
    order; all of them when the workflow file cannot be read any more."""
    try:
        from smoltui.orchestrator.workflow_spec import load_workflow

        tasks = load_workflow(file).spec.tasks if file else None
    except Exception:
        tasks = None
    if not tasks:
        return list(task_ids)
    needed = {dep for task in tasks for dep in task.depends_on}
    return [task_id for task_id in task_ids if task_id not in needed]


# -- renderables ----------------------------------------------------------------------------------


def output_view(value: Any) -> RenderableType:
    """An output as the user wants to read it: Markdown text, JSON, a table, or an artifact's path."""
    kind = type(value)
    if kind.__name__ == "DataFrame" and kind.__module__.startswith("pandas"):
        rows = (tuple(row) for row in value.head(SHOWN_ROWS).itertuples(index=False))
        return table_view([str(c) for c in value.columns], rows, (len(value), len(value.columns)))
    if isinstance(value, Path):
        return artifact_line(value)
    if isinstance(value, str):
        return Markdown(value) if value.strip() else Text("(empty)", "dim italic")
    if isinstance(value, dict | list):
        return json_view(value)
    return Text(repr(value))


def artifact_line(path: Path | str) -> Text:
    return Text.assemble(("artifact  ", "dim"), (str(path), "underline"))


def json_view(value: Any) -> Syntax:
    text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
    return Syntax(text, "json", theme="ansi_dark", word_wrap=True, background_color="default")


def table_view(columns: Sequence[str], rows: Iterable[Sequence[Any]], shape: Sequence[int],
               shown: int = SHOWN_ROWS) -> RenderableType:
    """A table's first ``shown`` rows and its size."""
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(str(column), overflow="ellipsis", max_width=24)
    for index, row in enumerate(rows):
        if index >= shown:
            break
        table.add_row(*(str(cell) for cell in row))
    total, width = (list(shape) + [0, 0])[:2]
    more = total - shown
    caption = f"{total} rows × {width} columns" + (f" (first {shown} shown)" if more > 0 else "")
    return Group(table, Text(caption, "dim"))


def described_view(value: Any, *, plain: bool = False) -> RenderableType:
    """A described output (see :func:`describe`): text as Markdown (as it was written when
    ``plain``: for a pipe), tables as tables with their file, other artifacts as their paths."""
    if isinstance(value, dict) and ARTIFACT_KEY in value:
        kind, path = value.get(ARTIFACT_KEY), value.get("path")
        if kind == "repr":
            return Text(str(value.get("text", "")))
        preview = value.get("preview")
        if kind == "dataframe" and isinstance(preview, dict):
            rows = preview.get("rows") or []
            return Group(table_view(preview.get("columns") or [], rows, preview.get("shape") or [len(rows), 0]),
                         artifact_line(path or "?"))
        return artifact_line(path or "?")
    if isinstance(value, str) and plain:
        return Text(value) if value.strip() else Text("(empty)")
    return output_view(value)


def task_views(task_id: str, outputs: Mapping[str, Any], *, plain: bool = False) -> list[tuple[str, RenderableType]]:
    """(a heading, the value) for each of a task's described outputs."""
    if not outputs:
        return [(task_id, Text("(the task declares no outputs)", "dim italic"))]
    return [(f"{task_id}.{name}", described_view(value, plain=plain)) for name, value in outputs.items()]


def print_outputs(tasks: Mapping[str, Mapping[str, Any]], *, stream: IO[str], run_id: str,
                  max_lines: int | None = None) -> None:
    """Print described outputs, task by task: a bold heading, then the value; ``max_lines`` cuts
    each value, saying how to see the rest (``smoltui show``)."""
    terminal = stream.isatty()
    console = Console(file=io.StringIO(), force_terminal=terminal, color_system="auto" if terminal else None,
                      width=_width(stream), highlight=False, soft_wrap=False)
    for task_id, outputs in tasks.items():
        for heading, view in task_views(task_id, outputs, plain=not terminal):
            stream.write("".join(f"{line}\n" for line in _render(console, Text(heading, "bold"))))
            lines = _render(console, view)
            if max_lines is not None and len(lines) > max_lines:
                lines = lines[:max_lines] + [f"… {len(lines) - max_lines} more lines: smoltui show {run_id} {task_id}"]
            stream.write("".join(f"  {line}\n" for line in lines))
    stream.flush()


def _render(console: Console, view: RenderableType) -> list[str]:
    buffer = console.file
    assert isinstance(buffer, io.StringIO)
    buffer.seek(0)
    buffer.truncate()
    console.print(view)
    return [line.rstrip() for line in buffer.getvalue().rstrip("\n").split("\n")]


def _width(stream: IO[str]) -> int:
    if stream.isatty():
        import shutil

        return max(40, shutil.get_terminal_size().columns - 2)
    return 100


__all__ = ["ARTIFACT_KEY", "PREVIEW_ROWS", "RUN_END_LINES", "artifact_line", "describe", "described_view",
           "final_tasks", "inside", "json_view", "output_view", "print_outputs", "table_preview", "table_view",
           "task_views"]
