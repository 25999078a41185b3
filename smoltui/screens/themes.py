"""Themes shipped as TOML files, registered next to Textual's built-in ones.

A theme file holds the fields of :class:`textual.theme.Theme` (``name``, ``primary``, ``background``,
..., ``dark`` and a ``[variables]`` table). The files live in ``themes/`` at the repository root; a
wheel carries the same folder as ``smoltui/_themes`` (see ``force-include`` in pyproject.toml), so
both places are searched.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

import smoltui

FALLBACK_THEME = "textual-dark"

_COLOR_FIELDS = (
    "primary",
    "secondary",
    "accent",
    "warning",
    "error",
    "success",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_ALLOWED_FIELDS = {f.name for f in fields(Theme)}


@dataclass(frozen=True)
class ThemeLoadError:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"theme file {self.path}: {self.reason}"


def bundled_theme_dirs() -> list[Path]:
    """The theme folders that exist: the installed copy first, then a source checkout's."""
    package = Path(smoltui.__file__).resolve().parent
    candidates = [package / "_themes", package.parent / "themes"]
    return [path for path in candidates if path.is_dir()]


def load_theme_file(path: Path) -> Theme:
    """Read one theme file; raise ValueError with a reason a person can act on."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"TOML error: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read it: {error}") from None
    unknown = sorted(set(data) - _ALLOWED_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise ValueError("missing 'name'")
    if not isinstance(data.get("primary"), str):
        raise ValueError("missing 'primary' colour")
    for key in _COLOR_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a colour string, not {value!r}")
        try:
            Color.parse(value)
        except ColorParseError:
            raise ValueError(f"{key} = {value!r} is not a colour") from None
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
    ):
        raise ValueError("[variables] must map names to strings")
    if "dark" in data and not isinstance(data["dark"], bool):
        raise ValueError("dark must be true or false")
    try:
        theme = Theme(**data)
        # Generating the colour system is what applying the theme does; failing here, at load
        # time, turns a crash on first paint into a message about this file.
        theme.to_color_system().generate()
    except Exception as error:  # any failure here means a bad file, never a bug of ours
        raise ValueError(str(error) or type(error).__name__) from None
    return theme


def load_themes(directories: Iterable[Path]) -> tuple[list[Theme], list[ThemeLoadError]]:
    """Every ``*.toml`` theme in ``directories``; a later folder's theme replaces an earlier one's."""
    themes: dict[str, Theme] = {}
    errors: list[ThemeLoadError] = []
    for directory in directories:
        try:
            files = sorted(directory.glob("*.toml"))
        except OSError as error:
            errors.append(ThemeLoadError(directory, f"cannot list it: {error}"))
            continue
        for path in files:
            try:
                theme = load_theme_file(path)
            except ValueError as error:
                errors.append(ThemeLoadError(path, str(error)))
                continue
            themes[theme.name] = theme
    return list(themes.values()), errors
