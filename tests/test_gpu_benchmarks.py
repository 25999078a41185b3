"""The GPU benchmark scripts' --smoke runs: the same call sequence on the CPU with a tiny model, so a
broken script shows up here and not on a lent GPU whose minutes are counted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


def smoke(script: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((out / script.replace(".py", ".json")).read_text())


def test_gpu_decode_smoke_measures_every_configuration(tmp_path: Path) -> None:
    results = smoke("gpu_decode.py", tmp_path)
    configurations = {name: r for name, r in results.items() if isinstance(r, dict) and "mode" in r}
    assert len(configurations) == 8
    for name, record in configurations.items():
        assert "error" not in record, f"{name}: {record['error']}"
        assert record["tok_s"] > 0 and record["decoded"] > 0, name
        # greedy tokens of a cached, compiled or "captured" step agree with the first run of the same weights
        assert record["agrees_with_reference"] >= 16, name


def test_gpu_profile_smoke_times_each_step_variant_and_names_kernels(tmp_path: Path) -> None:
    results = smoke("gpu_profile.py", tmp_path)
    assert results["gemv"]["gb_s"] > 0
    for implementation in ("sdpa", "eager"):
        for context in (2048, 256):
            step = results[f"step {implementation} ctx{context}"]
            assert "error" not in step, step
            assert step["replay_ms"] > 0 and step["loop_ms"] > 0
    total, *top = results["kernels sdpa ctx2048"]
    assert total["name"] == "(all)" and total["us_per_step"] > 0
    assert any("mm" in row["name"] or "linear" in row["name"] for row in top)
