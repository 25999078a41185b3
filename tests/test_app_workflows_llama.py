"""End to end through the TUI: launch the example notes-to-report workflow from the tree, approve its
tool calls by key in the run view, and let its LLM tasks run on the bundled model (real llama.cpp).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tui.harness import SIZE, build_app, build_core, ready, store_fixture, wait_until  # noqa: F401

from smoltui.backends.base import GenerationParams
from smoltui.orchestrator.store import Store
from smoltui.screens.launch_dialog import LaunchDialog
from smoltui.screens.run_view import RunScreen

pytestmark = pytest.mark.llama

REPO = Path(__file__).resolve().parent.parent


async def test_example_workflow_runs_on_the_bundled_model_through_the_tui(store: Store, tmp_path: Path,
                                                                          bundled_model: Path) -> None:
    pytest.importorskip("llama_cpp")
    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    folder = tmp_path / "workflows"
    shutil.copytree(REPO / "workflows" / "data" / "notes", folder / "data" / "notes")
    shutil.copy(REPO / "workflows" / "notes_to_report.yaml", folder)
    # One thread: on a machine whose cores are shared (a loaded CI runner), two spinning llama.cpp
    # threads took three times as long as one.
    backend = LlamaCppBackend(bundled_model, LlamaSettings(n_ctx=2048, n_threads=1), model_name="bundled")
    # The default policy: reading tools run by themselves; the python and write_file calls wait
    # for a key. The project folder (tmp_path) holds workflows/.
    core = build_core(store, backend, tmp_path, project_dir=tmp_path)
    core.runs.params = GenerationParams(max_tokens=48, temperature=0.0)  # runs' LLM tasks: short and steady
    app = build_app(store, None, tmp_path, core=core)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await ready(pilot)
            await pilot.press("f3")
            tree = screen.workflow_tree
            await wait_until(pilot, lambda: tree.snapshot is not None, "the workflow tree", timeout=60)
            await wait_until(pilot, lambda: tree.cursor_node is not None and "Notes to report" in str(
                tree.cursor_node.label), "the workflow under the cursor", timeout=60)
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog), "the launch form", timeout=60)
            app.screen.query_one("#var-report_title").value = "From the TUI"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), "the run view", timeout=60)
            run = app.screen
            approved = 0
            while not (run.loaded and run.loaded.state in ("succeeded", "failed")):
                await wait_until(pilot, lambda: run.cards or (run.loaded and run.loaded.state in ("succeeded", "failed")),
                                 "an approval or the end of the run", timeout=240)
                if run.cards:
                    card = next(iter(run.cards.values()))
                    await pilot.press("ctrl+g")  # a card never takes the focus by itself
                    await wait_until(pilot, lambda c=card: c.has_focus, "the card's focus", timeout=60)
                    await pilot.press("y")
                    approved += 1
                    await wait_until(pilot, lambda c=card: c.call_id not in run.cards, "the card to go", timeout=60)
            assert run.loaded.state == "succeeded", run.loaded.tasks
            assert approved == 2  # read_notes (python) and save_report (write_file)
            report = (folder / "out" / "report.md").read_text(encoding="utf-8")
            assert report.startswith("# From the TUI\n")
            assert "data/notes/2024-05-06-customer-call.md" in report
            # The LLM tasks' outputs are shown in the run view (Markdown text from the model).
            summary = (await core.run_store.task_outputs(run.run_id, "summarise"))["summary"]
            assert summary.strip()
            await pilot.press("escape")
            await wait_until(pilot, lambda: any("succeeded" in label for label in tree.labels()),
                             "the finished run in the tree", timeout=60)
    finally:
        await core.runs.shutdown()
        await core.model.close()
