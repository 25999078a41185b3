"""The README's key tables and its ``[keymap]`` example stay true.

Every table row that names a binding id must name a key that binding is on by default, every id a
user can remap is in the README, and the ``[keymap]`` example works as printed: its keys do what
they say while the user is typing in the message box, and nothing typed is lost.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tui.harness import build_app, ready, scripted, store_fixture, type_text, wait_until  # noqa: F401

from smoltui.app import binding_table
from smoltui.config import Config
from smoltui.orchestrator.store import Store

README = Path(__file__).resolve().parents[1] / "README.md"
ARROWS = {"←": "left", "→": "right", "↑": "up", "↓": "down"}
NAMES = {"esc": "escape", "/": "slash"}
ID = re.compile(r"`([a-z_]+\.[a-z_0-9*]+)`")


def _rows() -> list[tuple[int, list[str], list[str]]]:
    """(line number, keys named in the row, binding ids in the row) of every key table row; a key
    may be named beside its id in the description (`ctrl+s` accepts (`edit_args.accept`))."""
    rows = []
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if not line.startswith("| `"):
            continue
        ids = ID.findall(line.partition(" | ")[2])
        if not ids:
            continue
        keys = [NAMES.get(k) or re.sub("[←→↑↓]", lambda m: ARROWS[m.group(0)], k)
                for k in re.findall(r"`([^`]+)`", line)]
        rows.append((number, keys, ids))
    return rows


def test_every_key_table_row_names_the_keys_its_bindings_are_on() -> None:
    table = binding_table()
    rows = _rows()
    assert len(rows) > 10, "the README's key tables were found"
    for number, keys, ids in rows:
        for binding_id in ids:
            if "*" in binding_id:
                prefix = binding_id.rstrip("*")
                assert any(known.startswith(prefix) for known in table), f"README line {number}: {binding_id}"
                continue
            assert binding_id in table, f"README line {number} names {binding_id}, which no binding has"
            defaults = {key.strip() for key in table[binding_id][1].split(",")}
            assert defaults & set(keys), (
                f"README line {number}: {binding_id} is on {sorted(defaults)}, the row says {keys}")


def test_every_remappable_binding_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [binding_id for binding_id in binding_table()
               if f"`{binding_id}`" not in text and not _covered_by_glob(binding_id, text)]
    assert not missing, f"binding ids a user can remap but the README does not name: {missing}"


def _covered_by_glob(binding_id: str, text: str) -> bool:
    return any(binding_id.startswith(glob.rstrip("*")) for glob in re.findall(r"`([a-z_]+\.[a-z_]*\*)`", text))


def _keymap_example() -> dict[str, str]:
    match = re.search(r"```toml\n(\[keymap\]\n.*?)```", README.read_text(), re.S)
    assert match, "the README shows a [keymap] example"
    return tomllib.loads(match.group(1))["keymap"]


async def test_the_keymap_example_works_while_typing(store: Store, tmp_path: Path) -> None:
    keymap = _keymap_example()
    assert {"chat.think", "sessions.toggle"} <= set(keymap), keymap
    app = build_app(store, scripted("ok"), tmp_path, config=Config(keymap=keymap))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await ready(pilot)
        assert not app.shown_notifications, [n.message for n in app.shown_notifications]
        await type_text(pilot, "half a thought")
        assert screen.focused is screen.prompt
        think, sessions = screen.think, screen.session_list.display
        await pilot.press(keymap["chat.think"].split(",")[0])
        await wait_until(pilot, lambda: screen.think != think, f"{keymap['chat.think']} to toggle thinking")
        await pilot.press(keymap["sessions.toggle"].split(",")[0])
        await wait_until(pilot, lambda: screen.session_list.display != sessions,
                         f"{keymap['sessions.toggle']} to toggle the chat list")
        await type_text(pilot, " goes on")
        assert screen.prompt.text == "half a thought goes on", "no typed key was taken or lost"


def test_every_binding_of_every_screen_can_be_remapped() -> None:
    """A screen or widget added later whose bindings [keymap] does not know (so the user cannot
    move them, and clashes go unreported) fails here."""
    import importlib
    import inspect
    import pkgutil

    from textual.binding import Binding

    import smoltui.screens

    table = binding_table()
    unknown = []
    for module_info in pkgutil.iter_modules(smoltui.screens.__path__):
        module = importlib.import_module(f"smoltui.screens.{module_info.name}")
        for _, owner in inspect.getmembers(module, inspect.isclass):
            if owner.__module__ != module.__name__:
                continue
            for binding in owner.__dict__.get("BINDINGS", []):
                if isinstance(binding, Binding) and binding.id and binding.id not in table:
                    unknown.append(f"{owner.__name__}: {binding.id}")
    assert not unknown, f"bindings missing from smoltui.app.binding_table: {unknown}"
