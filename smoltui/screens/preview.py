"""See an artifact without leaving the app: an image, a table, Markdown, text or JSON, full screen.

``o`` in the run view (a task's output) and on a chat's tool-call line (a file the tool produced)
opens :class:`PreviewScreen`; ``O`` there, or here, hands the file to the system's opener
(``xdg-open``, ``open``) or, for text when there is none, to ``$VISUAL``/``$EDITOR``.

Images go through textual-image, which asks the terminal what it can draw when it is imported
(before Textual starts reading the terminal): kitty's graphics protocol or sixel where the terminal
has them, coloured half blocks elsewhere (also when there is no terminal, as under tests, so a
snapshot is the same on every machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Center, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Label, Markdown, Static, TextArea
from textual_image.renderable import Image as _TerminalImage
from textual_image.renderable.sixel import Image as _SixelRenderable
from textual_image.renderable.tgp import Image as _TGPRenderable
from textual_image.widget import HalfcellImage, SixelImage, TGPImage

MAX_ROWS = 10_000
"""Rows of a table put in the preview (a DataTable holds them all in memory)."""
MAX_TEXT_BYTES = 2_000_000
"""Bytes of a text file shown; the rest is left for the opener."""
OPENERS: Sequence[str] = ("xdg-open", "open")
"""The system's "open with the default application" commands, tried in order."""
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
TABLE_SUFFIXES = {".csv", ".tsv", ".parquet"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
CODE_LANGUAGES = {".py": "python", ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
                  ".sql": "sql", ".html": "html", ".css": "css", ".js": "javascript", ".sh": "bash"}

if _TerminalImage is _TGPRenderable:
    ImageWidget: type[Widget] = TGPImage
elif _TerminalImage is _SixelRenderable:
    ImageWidget = SixelImage
else:
    # No graphics protocol (or no terminal at all): half blocks, never the blurrier unicode fallback.
    ImageWidget = HalfcellImage


@dataclass(frozen=True)
class Previewable:
    """What to preview: a file, or a value a task produced (a table, text, JSON)."""

    name: str
    path: Path | None = None
    value: Any = None


def previewable(name: str, value: Any) -> Previewable | None:
    """A task output worth previewing (a file, a table, text, a structure), or None."""
    if isinstance(value, Path):
        return Previewable(name, path=value)
    if _is_frame(value) or (isinstance(value, str) and value.strip()) or isinstance(value, dict | list):
        return Previewable(name, value=value)
    return None


def files_named(text: str, roots: Sequence[Path]) -> list[Path]:
    """Existing files under ``roots`` that ``text`` names (a tool's result line: ``chart-1a2b.png``,
    ``out/report.md``), first mention first; names that escape their root are not followed."""
    found: list[Path] = []
    for word in _words(text):
        if "." not in word.strip("."):
            continue
        for root in roots:
            try:
                candidate = (root / word).resolve()
                inside = candidate.is_relative_to(root.resolve())
            except (OSError, ValueError):
                continue
            if inside and candidate.is_file() and candidate not in found:
                found.append(candidate)
                break
    return found


def _words(text: str) -> list[str]:
    out: list[str] = []
    for raw in text.replace("\\n", " ").split():
        word = raw.strip("\"'`,;:()[]{}<>|")
        if word and len(word) < 300:
            out.append(word)
    return out


class PreviewScreen(Screen[None]):
    """One artifact, full screen; escape goes back to where it was opened."""

    CSS_PATH = "preview.tcss"
    BINDINGS = [
        Binding("escape", "close", "Back", id="preview.close"),
        Binding("O", "open_external", "Open outside", id="preview.open"),
    ]

    def __init__(self, item: Previewable, *, export_dir: Path | None = None) -> None:
        """``export_dir``: where a value that is no file is written for ``O`` (a table as CSV)."""
        super().__init__()
        self.item = item
        self.export_dir = export_dir
        self.title_label = Label(item.name, id="preview-title", markup=False)
        self.note = Label("", id="preview-note", markup=False)
        self.body = VerticalScroll(id="preview-body")
        self.kind = "loading"

    def compose(self) -> ComposeResult:
        yield self.title_label
        yield self.body
        yield self.note
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    @work(group="preview-load", exclusive=True)
    async def _load(self) -> None:
        item = self.item
        path = item.path
        if path is not None and not path.is_file():
            self._say(f"{item.name}: no file at {path} (it was moved or deleted)", "missing")
            return
        value = item.value
        suffix = path.suffix.lower() if path is not None else ""
        size = f" · {_size(path.stat().st_size)}" if path is not None else ""
        header = f"{path.name if path is not None else item.name}{size}"
        if _is_frame(value) or suffix in TABLE_SUFFIXES:
            await self._show_table(header, value, path)
        elif path is not None and suffix in IMAGE_SUFFIXES:
            await self._show_image(header, path)
        elif isinstance(value, dict | list):
            await self._show_text(header, json.dumps(value, ensure_ascii=False, indent=2, default=str), "json")
        elif isinstance(value, str):
            await self._show_markdown(header, value)
        elif path is not None:
            await self._show_file(header, path, suffix)
        else:
            self._say(f"{item.name}: {type(value).__name__} cannot be previewed", "unknown")

    async def _show_table(self, header: str, value: Any, path: Path | None) -> None:
        import asyncio

        try:
            frame, total = await asyncio.to_thread(_read_table, value, path)
        except Exception as error:  # a damaged file, or pandas/pyarrow missing: say which
            self._say(f"{header}: cannot be read as a table ({error})", "unknown")
            return
        self.title_label.update(f"{header} · {total:,} rows × {len(frame.columns)} columns")
        table: DataTable[str] = DataTable(id="preview-table", zebra_stripes=True)
        await self.body.remove()
        await self.mount(table, before=self.note)
        table.add_columns(*(str(c) for c in frame.columns))
        table.add_rows([tuple(_cell(v) for v in row) for row in frame.itertuples(index=False)])
        if total > len(frame):
            self.note.update(f"the first {len(frame):,} of {total:,} rows · O opens the whole table")
        table.focus()
        self.kind = "table"

    async def _show_image(self, header: str, path: Path) -> None:
        import asyncio

        try:
            from PIL import Image as PILImage

            def read() -> Any:
                with PILImage.open(path) as opened:
                    opened.load()
                    return opened.copy()

            image = await asyncio.to_thread(read)
        except Exception as error:  # not an image after all, or truncated
            self._say(f"{header}: cannot be read as an image ({error})", "unknown")
            return
        self.title_label.update(f"{header} · {image.width}×{image.height} px")
        await self.body.mount(Center(ImageWidget(image, id="preview-image")))
        self.note.update("O opens it full size")
        self.kind = "image"

    async def _show_markdown(self, header: str, text: str) -> None:
        self.title_label.update(header)
        await self.body.mount(Markdown(text, id="preview-markdown"))
        self.body.focus()
        self.kind = "markdown"

    async def _show_text(self, header: str, text: str, language: str | None) -> None:
        self.title_label.update(header)
        area = TextArea(text, read_only=True, id="preview-text", soft_wrap=language is None,
                        show_line_numbers=language is not None)
        if language is not None:
            # No tree-sitter grammar installed: plain text is still readable.
            with contextlib.suppress(Exception):
                area.language = language
        await self.body.remove()
        await self.mount(area, before=self.note)
        area.focus()
        self.kind = "text"

    async def _show_file(self, header: str, path: Path, suffix: str) -> None:
        import asyncio

        data = await asyncio.to_thread(_head, path)
        text = _as_text(data)
        if text is None:
            self._say(f"{header}: binary file ({_describe_binary(data)}); O opens it with the system's opener",
                      "binary")
            return
        cut = path.stat().st_size > MAX_TEXT_BYTES
        if suffix in MARKDOWN_SUFFIXES:
            await self._show_markdown(header, text)
        else:
            await self._show_text(header, text, CODE_LANGUAGES.get(suffix))
        if cut:
            self.note.update(f"the first {_size(MAX_TEXT_BYTES)} shown · O opens the whole file")

    def _say(self, text: str, kind: str) -> None:
        self.title_label.update(self.item.name)
        self.body.mount(Static(text, id="preview-message", markup=False))
        self.kind = kind

    # -- actions ---------------------------------------------------------------------------------

    def action_close(self) -> None:
        self.dismiss()

    def action_open_external(self) -> None:
        self._open()

    @work(group="preview-open", exclusive=True)
    async def _open(self) -> None:
        await open_item(self.app, self.item, self.export_dir)


async def open_item(app: App[Any], item: Previewable, export_dir: Path | None) -> bool:
    """``O``: the item's file (or its value written out) in another program; True if one ran."""
    path = await exported(item, export_dir)
    if path is None:
        app.notify(f"{item.name} has no file to open", severity="warning")
        return False
    return open_outside(app, path)


def key_hint(app: App[Any], bindings: Sequence[Binding | Any], wanted: Sequence[tuple[str, str]]) -> str:
    """``o preview · O open``: the keys of the binding ids in ``wanted`` as the user mapped them."""
    keymap = getattr(app, "_keymap", {}) or {}
    defaults = {b.id: b.key for b in bindings if isinstance(b, Binding) and b.id}
    parts = []
    for binding_id, label in wanted:
        key = keymap.get(binding_id, defaults.get(binding_id, "")).split(",")[0].strip()
        parts.append(f"{app.get_key_display(Binding(key, ''))} {label}")
    return " · ".join(parts)


async def exported(item: Previewable, folder: Path | None) -> Path | None:
    """The file to hand to another program: the item's own, or its value written into ``folder``
    (a table as CSV, which any spreadsheet opens; text as Markdown; a structure as JSON)."""
    import asyncio

    if item.path is not None:
        return item.path
    if folder is None or item.value is None:
        return None
    value = item.value
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.name)[:100] or "output"

    def write() -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if _is_frame(value):
            target = folder / f"{stem}.csv"
            value.to_csv(target, index=False)
        elif isinstance(value, str):
            target = folder / f"{stem}.md"
            target.write_text(value, encoding="utf-8")
        else:
            target = folder / f"{stem}.json"
            target.write_text(json.dumps(value, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        return target

    return await asyncio.to_thread(write)


def open_outside(app: App[Any], path: Path) -> bool:
    """Hand ``path`` to the system's opener, or a text file to ``$VISUAL``/``$EDITOR`` (the app
    suspends while a terminal editor runs); says on screen what happened. True if something ran."""
    opener = next((found for name in OPENERS if (found := shutil.which(name))), None)
    if opener is not None:
        try:
            # Detached: a viewer that stays open must not tie up the app, nor die with it.
            subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            app.notify(f"{Path(opener).name} could not start: {error}", severity="error")
            return False
        app.notify(f"opening {path.name} with {Path(opener).name}")
        return True
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    is_text = path.is_file() and _as_text(_head(path, 8192)) is not None
    if editor and is_text:
        try:
            with app.suspend():
                subprocess.run([*shlex.split(editor), str(path)], check=False)
        except Exception as error:  # no terminal to give the editor (SuspendNotSupported), or no such editor
            app.notify(f"{editor} could not run here ({error or type(error).__name__}); the file is {path}",
                       severity="error", timeout=12)
            return False
        app.refresh()
        return True
    why = f"no {' or '.join(OPENERS)} on this system"
    why += "" if is_text else " (and it is not a text file for $EDITOR)" if editor else " and no $EDITOR set"
    app.notify(f"{why}; the file is {path}", title="Cannot open", severity="warning", timeout=12)
    return False


# -- helpers -------------------------------------------------------------------------------------

def _is_frame(value: Any) -> bool:
    kind = type(value)
    return kind.__name__ == "DataFrame" and kind.__module__.startswith("pandas")


def _read_table(value: Any, path: Path | None) -> tuple[Any, int]:
    """(at most MAX_ROWS rows of the table, how many rows it has)."""
    if not _is_frame(value):
        import pandas as pd

        assert path is not None
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            value = pd.read_parquet(path)
        else:
            value = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    return value.head(MAX_ROWS), len(value)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 200 else text[:199] + "…"


def _head(path: Path, limit: int = MAX_TEXT_BYTES) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit)


def _as_text(data: bytes) -> str | None:
    """The bytes as text, or None for binary (a NUL byte, or not UTF-8 beyond a cut character)."""
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start >= len(data) - 4:  # the read cut a character in two
            return data[: error.start].decode("utf-8")
        return None


MAGIC = ((b"%PDF", "PDF document"), (b"PK\x03\x04", "zip archive (or a document made of one)"),
         (b"PAR1", "Parquet table"), (b"SQLite format 3", "SQLite database"), (b"\x1f\x8b", "gzip archive"),
         (b"\x7fELF", "executable"))


def _describe_binary(data: bytes) -> str:
    return next((what for magic, what in MAGIC if data.startswith(magic)), f"{_size(len(data))} of bytes")


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"
