"""Snapshots of the planner (80x24 and 160x45): a draft with a problem, after ``ctrl+s`` said why it
will not save it, in a project with a ``workflows/`` folder (the default place to save).

Deterministic by construction: the scripted model writes a fixed draft, the folder line shows a
fixed path, and the cursor does not blink.
Update with ``pytest tests/test_screens_plan_snapshot.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from test_plan_dialog import DRAFT
from textual.app import App
from textual.pilot import Pilot
from tui.harness import build_core, open_store_now, wait_until

from smoltui.backends.scripted import ScriptedBackend
from smoltui.core import Core
from smoltui.screens import plan_dialog
from smoltui.screens.plan_dialog import PlanDialog

BAD = dict(DRAFT, tasks=[dict(DRAFT["tasks"][0], tool="delete_everything"), DRAFT["tasks"][1]])


class Host(App[None]):
    def __init__(self, core: Core, folder: Path) -> None:
        super().__init__()
        self.core = core
        self.folder = folder

    def on_mount(self) -> None:
        self.push_screen(PlanDialog(self.core, self.folder))


async def _draft_refused(pilot: Pilot) -> None:
    app: Any = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, PlanDialog), "the planner")
    dialog = app.screen
    await pilot.press(*"clean up my notes", "enter")
    await wait_until(pilot, lambda: not dialog.drafting and dialog.problems, "the draft with problems")
    await wait_until(pilot, lambda: dialog.editor.scroll_y == 0, "the draft shown from its top")
    await pilot.press("ctrl+s")
    dialog.editor.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_planner_with_a_draft_it_will_not_save(snap_compare, tmp_path: Path, size: tuple[int, int],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_dialog, "short_path", lambda path, limit=28: "~/project/workflows")
    (tmp_path / "project" / "workflows").mkdir(parents=True)
    store = open_store_now(tmp_path / "smoltui.db")
    try:
        backend = ScriptedBackend([json.dumps(BAD)], delay_s=0)
        core = build_core(store, backend, tmp_path, project_dir=tmp_path / "project")
        assert snap_compare(Host(core, tmp_path / "mine"), terminal_size=size, run_before=_draft_refused)
    finally:
        asyncio.run(store.close())
