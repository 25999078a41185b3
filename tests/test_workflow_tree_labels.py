"""The workflow tree at 80 columns: a label the pane cuts says so with "…"; runs keep icon and time."""

from __future__ import annotations

import time
from pathlib import Path

from test_app_workflows import open_tree, setup
from tui.harness import SIZE, store_fixture, wait_until  # noqa: F401

from smoltui.orchestrator.store import Store

LONG = """\
workflow:
  id: long
  name: Summarise every markdown note in the research folder
  tasks:
    - {id: a, type: tool_call, tool: read_file, inputs: {path: in.txt}}
"""


def drawn_lines(tree) -> list[str]:  # noqa: ANN001
    return [tree.render_line(y).text.rstrip() for y in range(tree.size.height)]


async def test_cut_labels_end_in_an_ellipsis_and_runs_keep_their_duration(store: Store, tmp_path: Path) -> None:
    app, core, folder = setup(tmp_path, store)
    path = folder / "long.yaml"
    path.write_text(LONG)
    run = await core.run_store.create_run("long", name="Summarise", file=str(path.resolve()), task_ids=["a"])
    now = time.time()
    async with store.batch() as conn:
        await conn.execute("UPDATE runs SET state = 'succeeded', created_at = ?, updated_at = ? WHERE id = ?",
                           (now - 64, now, run.id))
    async with app.run_test(size=SIZE) as pilot:
        _, tree = await open_tree(pilot, app)
        await wait_until(pilot, lambda: any("Summarise" in line for line in drawn_lines(tree)), "the long workflow")
        # Open the workflow's runs.
        for _ in range(20):
            if "Summarise" in str(tree.cursor_node.label):
                break
            await pilot.press("down")
        await pilot.press("space")
        await wait_until(pilot, lambda: tree.cursor_node.is_expanded, "its runs")
        await pilot.pause()
        lines = drawn_lines(tree)
        width = tree.size.width
        [title] = [line for line in lines if "Summarise" in line]
        assert title.endswith("…") and len(title) <= width, (title, width)
        assert "Summarise every markdown" in title
        [run_line] = [line for line in lines if "1m04s" in line]  # the duration survives the cut
        assert "✓" in run_line and len(run_line) <= width
        # A longer state ("awaiting approval") gives way to the duration: the icon says it too.
        tree.set_awaiting({run.id})
        await wait_until(pilot, lambda: any("1m04s" in line and "succeeded" not in line for line in drawn_lines(tree)),
                         "the run's new state")
        [run_line] = [line for line in drawn_lines(tree) if "1m04s" in line]
        assert run_line.endswith("  1m04s") and run_line.split()[-3] == "?", run_line
        assert len(run_line) <= width
        # Labels that fit are left alone.
        assert not any(line.endswith("…") for line in lines if "Copy a note" in line)
