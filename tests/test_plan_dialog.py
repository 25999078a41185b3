"""The planner dialog in a tiny host app, driven with Pilot against a scripted backend (the
core's model, as in the app)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, Static, TextArea
from tui.harness import build_core, store_fixture, wait_until  # noqa: F401

from smoltui.backends.scripted import ScriptedBackend
from smoltui.core import Core
from smoltui.errors import BackendError, ModelError
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workflow_spec import load_workflow
from smoltui.screens.plan_dialog import PlanDialog, open_planner

DRAFT = {
    "id": "notes-digest",
    "name": "Notes digest",
    "description": "Summarise the notes",
    "variables": [{"name": "notes_file", "value": "notes.md"}],
    "tasks": [
        {"id": "read_notes", "type": "tool_call", "tool": "read_file", "depends_on": [],
         "inputs": {"path": "${notes_file}"}, "outputs": ["notes"]},
        {"id": "summarise", "type": "llm_task", "depends_on": ["read_notes"],
         "prompt": "Summarise:\n${notes}", "outputs": ["summary"]},
    ],
}


class Host(App[None]):
    """Opens the planner the way the app will: ``open_planner`` inside a worker."""

    def __init__(self, core: Core, folder: Path) -> None:
        super().__init__()
        self.core = core
        self.folder = folder
        self.answers: list[Path | None] = []

    def on_mount(self) -> None:
        self.run_worker(self._plan(), exclusive=True)

    async def _plan(self) -> None:
        self.answers.append(await open_planner(self, self.core, self.folder))


class FailsToLoad(ScriptedBackend):
    """A model whose weights cannot be loaded."""

    async def load(self, progress: Any = None) -> None:
        raise ModelError("the model is not loaded: no such file")


class FailsOnce(ScriptedBackend):
    """A model whose first generation fails; the next ones stream the script."""

    failed = False

    async def stream(self, messages: Any, params: Any, cancel: Any) -> AsyncIterator[Any]:
        if not self.failed:
            self.failed = True
            raise BackendError("the model stopped: out of memory")
        async for event in super().stream(messages, params, cancel):
            yield event


async def planner_shown(pilot: Pilot) -> PlanDialog:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, PlanDialog), "the planner")
    dialog = pilot.app.screen
    assert isinstance(dialog, PlanDialog)
    return dialog


def problems_text(dialog: PlanDialog) -> str:
    return str(dialog.query_one("#plan-problems", Static).render())


async def test_goal_draft_break_fix_save(store: Store, tmp_path: Path) -> None:
    backend = ScriptedBackend([json.dumps(DRAFT)], delay_s=0.001)
    folder = tmp_path / "mine"
    app = Host(build_core(store, backend, tmp_path), folder)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await planner_shown(pilot)
        assert dialog.active_bindings["ctrl+s"].binding.id == "plan.save"  # not the editor's, not the app's
        await pilot.press(*"summarise my notes", "enter")
        await wait_until(pilot, lambda: not dialog.drafting and "workflow:" in dialog.editor.text, "the draft")
        editor = dialog.query_one("#plan-yaml", TextArea)
        assert editor.language == "yaml" and not editor.read_only
        assert "tool: read_file" in editor.text and dialog.problems == []
        assert backend.prompts[0][1].content == "Goal: summarise my notes"

        # Break it: a key the workflow does not have. The problem shows; ctrl+s saves nothing.
        editor.focus()
        editor.move_cursor(editor.document.end)
        await pilot.press(*"bogus: 1")
        # Validation is debounced: on a slow machine it may first see half the typing.
        await wait_until(pilot, lambda: "unknown key `bogus`" in problems_text(dialog), "the problem to show",
                         timeout=30)
        assert editor.has_class("-invalid")
        await pilot.press("ctrl+s")
        await pilot.pause(0.05)
        assert app.screen is dialog and not folder.exists()

        # Fix it: the problem goes; ctrl+s saves and the dialog answers with the path.
        await pilot.press(*["backspace"] * len("bogus: 1"))
        await wait_until(pilot, lambda: not dialog.problems, "the problem to go")
        assert "ctrl+s saves to" in str(dialog.query_one("#plan-status").render())
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.answers, "the dialog's answer")
    saved = folder / "notes-digest.yaml"
    assert app.answers == [saved]
    assert load_workflow(saved).spec.tasks[0].tool == "read_file"


async def test_escape_cancels_and_saves_nothing(store: Store, tmp_path: Path) -> None:
    backend = ScriptedBackend([json.dumps(DRAFT)], delay_s=0.05)
    app = Host(build_core(store, backend, tmp_path), tmp_path / "mine")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PlanDialog), "the planner")
        await pilot.press(*"x", "enter")
        await wait_until(pilot, lambda: app.screen.drafting, "drafting to start")  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.answers, "the dialog's answer")
    assert app.answers == [None]
    assert not (tmp_path / "mine").exists()


async def failed_draft(pilot: Pilot) -> tuple[PlanDialog, str]:
    """Open the planner, ask for a draft that fails; the dialog and what its status line says."""
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, PlanDialog), "the planner")
    dialog = app.screen
    assert isinstance(dialog, PlanDialog)
    dialog.query_one("#plan-goal", Input).value = "summarise"
    await pilot.press("ctrl+r")
    status = lambda: str(dialog.query_one("#plan-status").render())  # noqa: E731
    await wait_until(pilot, lambda: "Drafting failed" in status(), "the failure")
    return dialog, status()


async def test_a_model_that_fails_to_load_says_so_and_the_dialog_stays(store: Store, tmp_path: Path) -> None:
    app = Host(build_core(store, FailsToLoad([json.dumps(DRAFT)]), tmp_path), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        dialog, status = await failed_draft(pilot)
        assert "no such file" in status
        assert app.screen is dialog and not dialog.drafting and app.answers == []
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.answers, "the dialog's answer")
    assert app.answers == [None]


async def test_redraft_after_a_failure_and_a_reply_that_is_not_json(store: Store, tmp_path: Path) -> None:
    backend = FailsOnce(["not json at all", json.dumps(DRAFT)], delay_s=0.001)
    app = Host(build_core(store, backend, tmp_path), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        dialog, status = await failed_draft(pilot)
        assert "out of memory" in status
        await pilot.press("ctrl+r")  # the second try: not JSON, then repaired
        await wait_until(pilot, lambda: not dialog.drafting and "workflow:" in dialog.editor.text, "the draft")
        assert len(backend.prompts) == 2 and dialog.problems == []
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.answers, "the dialog's answer")
    assert app.answers == [tmp_path / "notes-digest.yaml"]


class ReadsSlowly(ScriptedBackend):
    """A model that takes its time over the prompt: nothing streams until ``go`` is set (a real
    model reading the planner's long prompt can take most of a minute)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go = asyncio.Event()
        # Cleared by a test that must catch the drafting line mid-stream: the stream pauses after its
        # first few pieces until it is set again, however fast the machine is.
        self.finish = asyncio.Event()
        self.finish.set()

    async def stream(self, messages: Any, params: Any, cancel: Any) -> AsyncIterator[Any]:
        await self.go.wait()
        pieces = 0
        async for event in super().stream(messages, params, cancel):
            pieces += 1
            if pieces == 4:
                await self.finish.wait()
            yield event


def status_text(dialog: PlanDialog) -> str:
    return str(dialog.query_one("#plan-status").render())


async def test_drafting_shows_its_progress_and_the_focus_lands_in_the_draft(store: Store, tmp_path: Path) -> None:
    backend = ReadsSlowly([json.dumps(DRAFT)], delay_s=0.005)
    backend.finish.clear()
    app = Host(build_core(store, backend, tmp_path), tmp_path / "mine")
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await planner_shown(pilot)
        await pilot.press(*"summarise my notes", "enter")
        # While the model reads the prompt: the phase, and a clock that ticks with nothing streamed.
        await wait_until(pilot, lambda: "reading the prompt" in status_text(dialog), "the reading phase")
        await wait_until(pilot, lambda: "· 1 s" in status_text(dialog), "the clock to tick", timeout=10)
        assert app.focused is dialog.editor  # the focus is in the draft from the start
        await pilot.press("ctrl+s")  # too early: it says so
        assert "still drafting" in status_text(dialog)
        backend.go.set()
        await wait_until(pilot, lambda: "tokens" in status_text(dialog) and "tok/s" in status_text(dialog),
                         "tokens and tok/s")
        backend.finish.set()
        await wait_until(pilot, lambda: not dialog.drafting and "workflow:" in dialog.editor.text, "the draft")
        # Arrows move the cursor in the draft straight away (no shift+tab first).
        assert app.focused is dialog.editor
        await pilot.press("down", "down", "right")
        assert dialog.editor.cursor_location == (2, 1)
        assert "ctrl+s saves to" in status_text(dialog)


async def test_ctrl_s_on_a_draft_with_problems_says_why(store: Store, tmp_path: Path) -> None:
    bad = json.dumps(dict(DRAFT, tasks=[dict(DRAFT["tasks"][0], tool="delete_everything")]))
    backend = ScriptedBackend([bad], delay_s=0.001)  # the repair writes the same again
    folder = tmp_path / "mine"
    app = Host(build_core(store, backend, tmp_path), folder)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await planner_shown(pilot)
        await pilot.press("ctrl+s")
        assert "no draft yet" in status_text(dialog)
        await pilot.press(*"clean up", "enter")
        await wait_until(pilot, lambda: not dialog.drafting and dialog.problems, "the draft with problems")
        await pilot.press("ctrl+s")
        status = status_text(dialog)
        assert status.startswith("Not saved: line ") and "unknown tool `delete_everything`" in status
        assert app.screen is dialog and not folder.exists()


async def test_a_draft_saves_in_the_projects_workflows_so_its_relative_paths_work(
        store: Store, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "workflows").mkdir(parents=True)
    (project / "workflows" / "notes.md").write_text("- buy milk\n- call Ann\n")
    backend = ScriptedBackend([json.dumps(DRAFT), "Milk and Ann."], delay_s=0.001)
    core = build_core(store, backend, tmp_path, project_dir=project)
    user = tmp_path / "mine"
    app = Host(core, user)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await planner_shown(pilot)
        folder_line = lambda: str(dialog.query_one("#plan-folder").render())  # noqa: E731
        assert "the project's workflows/" in folder_line()
        await pilot.press("ctrl+o")  # the other folder, and back
        assert "your workflow folder" in folder_line() and "mine" in folder_line()
        await pilot.press("ctrl+o")
        assert "the project's workflows/" in folder_line()
        await pilot.press(*"summarise my notes", "enter")
        await wait_until(pilot, lambda: not dialog.drafting and "workflow:" in dialog.editor.text, "the draft")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.answers, "the dialog's answer")
    saved = (project / "workflows" / "notes-digest.yaml").resolve()
    assert app.answers == [saved] and not user.exists()
    # The saved draft's relative path (notes.md) reaches the project's file when it runs.
    run_id = await core.runs.launch(saved)
    await asyncio.wait_for(core.runs.active[run_id], 20)
    assert await core.runs.run_store.task_states(run_id) == {"read_notes": "succeeded", "summarise": "succeeded"}
    assert "buy milk" in json.dumps(await core.runs.run_store.task_outputs(run_id, "read_notes"))
