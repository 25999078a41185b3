"""The shipped example workflows run end to end, offline, on the bundled model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO

pytestmark = pytest.mark.llama


def test_seed_data_analysis_workflow_runs_on_the_bundled_model(cli_env: dict[str, str], home: Path,
                                                               bundled_model: Path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("pandas")
    # Short replies keep the test quick; the random-ish words of a 135M model are not the point here.
    (home / "config.toml").write_text("[chat]\nmax_tokens = 48\ntemperature = 0.0\n", encoding="utf-8")
    result = subprocess.run(
        [PYTHON, "-m", "smoltui", "run", str(REPO / "workflows" / "data_analysis_workflow.yaml"),
         "--approve", "all", "--json"],
        env=cli_env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    final = events[-1]
    assert final["event"] == "result" and final["state"] == "succeeded"
    assert final["tasks"] == dict.fromkeys(["load_data", "analyze_data", "generate_chart", "create_report"], "succeeded")
    artifacts = home / "runs" / final["run_id"] / "artifacts"
    charts = list(artifacts.glob("chart-*.png"))
    assert len(charts) == 1 and charts[0].read_bytes()[:4] == b"\x89PNG"
    # The loaded table travelled as a DataFrame and reached the chart tool as a table artifact id.
    import sqlite3

    calls = sqlite3.connect(home / "smoltui.db").execute(
        "select arguments from tool_calls where tool = 'matplotlib_chart'").fetchall()
    assert calls and json.loads(calls[0][0])["data"].startswith("table-")


def _run_example(name: str, cli_env: dict[str, str], home: Path, workspace: Path,
                 *extra: str) -> tuple[dict, list[dict]]:
    """Run workflows/NAME end to end on the bundled model in WORKSPACE; (final result, all events)."""
    pytest.importorskip("llama_cpp")
    (home / "config.toml").write_text("[chat]\nmax_tokens = 48\ntemperature = 0.0\n", encoding="utf-8")
    file = REPO / "workflows" / name
    check = subprocess.run([PYTHON, "-m", "smoltui", "validate", str(file)], env=cli_env,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert check.returncode == 0, check.stderr + check.stdout
    result = subprocess.run(
        [PYTHON, "-m", "smoltui", "run", str(file), "--approve", "all", "--json",
         "--workspace", str(workspace), *extra],
        env=cli_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    final = events[-1]
    assert final["event"] == "result" and final["state"] == "succeeded", final
    return final, events


def _attempts(home: Path, run_id: str) -> dict[str, tuple[str, int]]:
    import sqlite3

    with sqlite3.connect(home / "smoltui.db") as db:
        rows = db.execute("select task_id, state, attempt from task_runs where run_id = ?", (run_id,)).fetchall()
    return {task_id: (state, attempt) for task_id, state, attempt in rows}


def test_notes_to_report_workflow_writes_the_report(cli_env: dict[str, str], home: Path, tmp_path: Path,
                                                    bundled_model: Path) -> None:
    # The notes are copied into a scratch workspace so the run writes nothing into the repo.
    workspace = tmp_path / "ws"
    shutil.copytree(REPO / "workflows" / "data" / "notes", workspace / "data" / "notes")
    final, _ = _run_example("notes_to_report.yaml", cli_env, home, workspace,
                            "--var", "report_path=reports/team.md", "--var", "report_title=Team notes")
    assert final["tasks"] == dict.fromkeys(
        ["find_notes", "read_notes", "summarise", "write_report", "save_report"], "succeeded")
    report = (workspace / "reports" / "team.md").read_text(encoding="utf-8")
    assert report.startswith("# Team notes\n")
    assert "## Summary" in report
    notes = sorted(p.name for p in (REPO / "workflows" / "data" / "notes").glob("*.md"))
    assert len(notes) >= 2 and all(f"data/notes/{name}" in report for name in notes)
    # The notes' text reached the summarising prompt through `read_notes`' output.
    import sqlite3

    with sqlite3.connect(home / "smoltui.db") as db:
        (outputs,) = db.execute("select outputs from task_runs where run_id = ? and task_id = 'read_notes'",
                                (final["run_id"],)).fetchone()
    assert "Customer call, 6 May" in outputs


def test_conditional_retry_workflow_branches_retries_and_skips(cli_env: dict[str, str], home: Path,
                                                               tmp_path: Path, bundled_model: Path) -> None:
    workspace = tmp_path / "ws"
    final, events = _run_example("conditional_retry.yaml", cli_env, home, workspace)
    assert final["tasks"] == {
        "measure": "succeeded", "check": "succeeded",
        "comment": "succeeded", "save_comment": "succeeded",  # the `then` branch (7 rows > 5)
        "short_note": "skipped",                              # the `else` branch, not chosen
        "flaky_step": "succeeded", "write_log": "succeeded", "cleanup": "succeeded",
    }
    tasks = _attempts(home, final["run_id"])
    assert tasks["flaky_step"] == ("succeeded", 2)  # the first attempt timed out, the retry succeeded
    assert tasks["short_note"][0] == "skipped"
    assert any(e["event"] == "log" and e["task_id"] == "flaky_step" and "attempt 1/3 failed: timed out" in e["message"]
               for e in events)
    assert (workspace / "out" / "comment.md").read_text(encoding="utf-8").startswith("# Orders\n")
    assert not (workspace / "out" / "note.md").exists()
    assert (workspace / "out" / "log.txt").read_text(encoding="utf-8") == "large: True\nflaky step: attempt 2\n"
    assert not (workspace / ".flaky-attempts").exists()  # cleanup ran

    runs = subprocess.run([PYTHON, "-m", "smoltui", "runs", "--json"], env=cli_env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    (row,) = [r for r in json.loads(runs.stdout) if r["id"] == final["run_id"]]
    assert row["state"] == "succeeded" and row["task_states"]["short_note"] == "skipped"


def test_conditional_retry_workflow_takes_the_else_branch_and_honours_when(
        cli_env: dict[str, str], home: Path, tmp_path: Path, bundled_model: Path) -> None:
    workspace = tmp_path / "ws"
    final, _ = _run_example("conditional_retry.yaml", cli_env, home, workspace,
                            "--var", "threshold=100", "--var", "keep_log=false")
    tasks = final["tasks"]
    assert tasks["short_note"] == "succeeded"
    assert tasks["comment"] == tasks["save_comment"] == "skipped"  # not chosen, and its dependent
    assert tasks["write_log"] == "skipped"  # `when: ${keep_log}` is false
    assert tasks["flaky_step"] == tasks["cleanup"] == "succeeded"
    assert _attempts(home, final["run_id"])["flaky_step"] == ("succeeded", 2)
    assert (workspace / "out" / "note.md").read_text(encoding="utf-8").startswith("Only 7 rows (threshold 100)")
    assert not (workspace / "out" / "comment.md").exists() and not (workspace / "out" / "log.txt").exists()
    assert not (workspace / ".flaky-attempts").exists()
