"""The load benchmark, small and with the scripted model: a real ``smoltui serve`` process, followers
that each see every event once and in order, completions served in the order they came, and
followers that hang up mid-run without stopping it (benchmarks/bench_serve.py checks each)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import PYTHON

REPO = Path(__file__).resolve().parents[2]


def test_followers_miss_nothing_and_completions_keep_their_order(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    ran = subprocess.run([PYTHON, str(REPO / "benchmarks" / "bench_serve.py"), "--model", "scripted",
                          "--clients", "10", "--completions", "5", "--tasks", "30", "--leave", "3",
                          "--out", str(out)], env=cli_env, capture_output=True, text=True, timeout=55)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(out.read_text())
    assert result["problems"] == [] and result["same_sequence_for_all"] and result["served_in_arrival_order"]
    assert result["run_events"] >= 30 and result["events_delivered"] == 10 * result["events_per_follower"]
