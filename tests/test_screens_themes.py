"""Theme files: found in a checkout and in a wheel, registered beside Textual's, bad ones reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui.harness import SIZE, build_app, notifications, ready, scripted, store_fixture  # noqa: F401

import smoltui
from smoltui.config import Config, UIConfig
from smoltui.orchestrator.store import Store
from smoltui.screens.themes import bundled_theme_dirs, load_theme_file, load_themes

REPO_THEMES = Path(__file__).resolve().parents[1] / "themes"


def test_shipped_themes_load() -> None:
    assert REPO_THEMES in bundled_theme_dirs()
    themes, errors = load_themes(bundled_theme_dirs())
    assert errors == []
    by_name = {theme.name: theme for theme in themes}
    assert {"smol-dusk", "smol-paper"} <= set(by_name)
    assert by_name["smol-dusk"].dark and not by_name["smol-paper"].dark
    assert by_name["smol-dusk"].variables["footer-key-foreground"] == "#E2A04B"


def test_installed_wheel_layout_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site-packages" / "smoltui"
    (package / "_themes").mkdir(parents=True)
    (package / "_themes" / "wheel-theme.toml").write_text('name = "wheel-theme"\nprimary = "#123456"\n')
    monkeypatch.setattr(smoltui, "__file__", str(package / "__init__.py"))
    assert bundled_theme_dirs() == [package / "_themes"]
    themes, errors = load_themes(bundled_theme_dirs())
    assert [t.name for t in themes] == ["wheel-theme"] and errors == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('name = "x"\nprimary = "not-a-colour"\n', "not a colour"),
        ('name = "x"\nprimary = \n', "TOML error"),
        ('primary = "#fff"\n', "missing 'name'"),
        ('name = "x"\nprimary = "#fff"\nsparkle = true\n', "unknown field(s) sparkle"),
        ('name = "x"\nprimary = "#fff"\n[variables]\nfoo = 3\n', "[variables]"),
    ],
)
def test_bad_theme_files_are_reported(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_theme_file(path)


async def test_configured_theme_is_applied_and_builtins_stay(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("ok"), tmp_path, config=Config(ui=UIConfig(theme="smol-paper")))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == "smol-paper"
        assert {"smol-dusk", "smol-paper", "textual-dark", "textual-light", "nord"} <= set(
            app.available_themes
        )
        assert app.current_theme.background == "#F7F4EC"


async def test_unknown_theme_falls_back(store: Store, tmp_path: Path) -> None:
    app = build_app(store, scripted("ok"), tmp_path, config=Config(ui=UIConfig(theme="no-such-theme")))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == "textual-dark"
        assert any("no-such-theme" in n and "textual-dark" in n for n in notifications(app))


async def test_a_bad_theme_file_is_a_notification_not_a_crash(store: Store, tmp_path: Path) -> None:
    themes = tmp_path / "themes"
    themes.mkdir()
    (themes / "broken.toml").write_text('name = "broken"\nprimary = "#zzzzzz"\n')
    (themes / "fine.toml").write_text('name = "fine"\nprimary = "#336699"\nbackground = "#101010"\n')
    config = Config(ui=UIConfig(theme="fine"))
    app = build_app(store, scripted("ok"), tmp_path, config=config, theme_dirs=[themes])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.is_running
        assert app.theme == "fine"
        assert "broken" not in app.available_themes
        assert any(str(themes / "broken.toml") in n for n in notifications(app))
