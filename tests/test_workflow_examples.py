"""The shipped example workflows run end to end, offline, on the bundled model."""

from __future__ import annotations

import json
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
