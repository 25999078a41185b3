"""End to end through the TUI: launch the example notes-to-report workflow from the tree, approve its
tool calls by key in the run view, and let its LLM tasks run on the bundled model (real llama.cpp).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tui.harness import SIZE, build_app, ready, wait_until

from smoltui.backends.base import GenerationParams
from smoltui.orchestrator.approval import Policy
from smoltui.orchestrator.store import Store
from smoltui.orchestrator.workbench import Workbench
from smoltui.orchestrator.workflow_catalog import WorkflowFolder
from smoltui.screens.launch_dialog import LaunchDialog
from smoltui.screens.run_view import RunScreen
from smoltui.tools.builtins import builtin_tools

pytestmark = pytest.mark.llama

REPO = Path(__file__).resolve().parent.parent


async def test_example_workflow_runs_on_the_bundled_model_through_the_tui(tmp_path: Path,
                                                                          bundled_model: Path) -> None:
    pytest.importorskip("llama_cpp")
    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    folder = tmp_path / "workflows"
    shutil.copytree(REPO / "workflows" / "data" / "notes", folder / "data" / "notes")
    shutil.copy(REPO / "workflows" / "notes_to_report.yaml", folder)
    store = Store.open(tmp_path / "smoltui.db")
    try:
        backend = LlamaCppBackend(bundled_model, LlamaSettings(n_ctx=2048, n_threads=2), model_name="bundled")
        app = build_app(store, backend, tmp_path)  # type: ignore[arg-type]
        # Reading tools run by themselves; the python and write_file calls wait for a key.
        app.workbench = Workbench.build(
            store, tools={t.name: t for t in builtin_tools()}, policy=Policy(),
            folders=[WorkflowFolder("project", folder)], backend=app.service.loaded_backend,
            params=GenerationParams(max_tokens=48, temperature=0.0))
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
                    await wait_until(pilot, lambda c=card: c.has_focus, "the card's focus", timeout=60)
                    await pilot.press("y")
                    approved += 1
                    await wait_until(pilot, lambda c=card: c.pending.call.id not in run.cards, "the card to go", timeout=60)
            assert run.loaded.state == "succeeded", run.loaded.tasks
            assert approved == 2  # read_notes (python) and save_report (write_file)
            report = (folder / "out" / "report.md").read_text(encoding="utf-8")
            assert report.startswith("# From the TUI\n")
            assert "data/notes/2024-05-06-customer-call.md" in report
            # The LLM tasks' outputs are shown in the run view (Markdown text from the model).
            summary = run.workbench.run_store.task_outputs(run.run_id, "summarise")["summary"]
            assert summary.strip()
            await pilot.press("escape")
            await wait_until(pilot, lambda: any("succeeded" in str(n.label) for n in tree._walk(tree.root)),
                             "the finished run in the tree", timeout=60)
    finally:
        store.close()
