"""How long `smoltui --help` and `smoltui --version` take, and what they import.

    .venv/bin/python benchmarks/bench_startup.py [--runs 10]

Target: well under half a second, importing none of torch, transformers, llama_cpp, textual, pydantic,
huggingface_hub or aiosqlite.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "llama_cpp", "textual", "pydantic", "huggingface_hub", "aiosqlite")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    baseline = _timed([sys.executable, "-c", "pass"], args.runs)
    print(f"{'command':<24} {'median s':>9} {'min s':>7}   heavy modules imported")
    print(f"{'python -c pass':<24} {statistics.median(baseline):>9.3f} {min(baseline):>7.3f}")
    worst = 0.0
    for flag in ("--help", "--version"):
        command = [sys.executable, "-m", "smoltui", flag]
        times = _timed(command, args.runs)
        trace = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], capture_output=True, text=True)
        modules = {line.split("|")[-1].strip().split(".")[0] for line in trace.stderr.splitlines()}
        heavy = sorted(modules & set(HEAVY)) or ["none"]
        worst = max(worst, statistics.median(times))
        print(f"{'smoltui ' + flag:<24} {statistics.median(times):>9.3f} {min(times):>7.3f}   {', '.join(heavy)}")
    verdict = "PASS" if worst < 0.5 else "MISS"
    print(f"target: < 0.5 s -> {verdict} (worst median {worst:.3f} s)")
    return 0


def _timed(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    raise SystemExit(main())
