"""Scheduler overhead: a random DAG of no-op tasks run through the real scheduler and SQLite store.

    .venv/bin/python benchmarks/bench_scheduler.py [--tasks 1000] [--concurrency 4] [--seed 0] [--runs 3]

Each task depends on 0-3 earlier tasks (seeded); every task is a ``tool_call`` of a no-op executor, so
all the time measured is the scheduler's own: graphlib ordering, the semaphore, template rendering,
and every state change committed to a temporary SQLite file (the async ``Store`` over aiosqlite, and
``RunStore``) before its event is published on an ``EventBus``. Targets: per-task overhead under
2 ms. Peak memory is measured in a separate run under ``tracemalloc`` (which slows Python down, so it
is not timed), plus the process's ``ru_maxrss``. Results go to benchmarks/out/bench_scheduler.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smoltui.orchestrator.events import EventBus  # noqa: E402
from smoltui.orchestrator.run_store import RunStore  # noqa: E402
from smoltui.orchestrator.scheduler import RenderedTask, TaskInfo, WorkflowRunner  # noqa: E402
from smoltui.orchestrator.store import Store  # noqa: E402
from smoltui.orchestrator.workflow_spec import Task, Workflow  # noqa: E402

TARGET_MS = 2.0
OUT = Path(__file__).resolve().parent / "out" / "bench_scheduler.json"


class NoopExecutor:
    """Does nothing; counts calls so the benchmark can check every task ran."""

    def __init__(self) -> None:
        self.calls = 0

    async def execute(self, task: Task, rendered: RenderedTask, info: TaskInfo) -> dict[str, Any]:
        self.calls += 1
        return {}


def random_dag(n: int, seed: int, max_deps: int = 3) -> Workflow:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        deps = rng.sample(range(i), k=min(i, rng.randint(0, max_deps)))
        tasks.append(Task(id=f"t{i:04d}", type="tool_call", tool="noop",
                          depends_on=[f"t{d:04d}" for d in sorted(deps)], inputs={"i": i}))
    return Workflow(id="bench-dag", name="random DAG", tasks=tasks, max_concurrent_tasks=4)


def run_once(spec: Workflow, concurrency: int) -> tuple[float, int, int]:
    """(wall seconds, events published, tasks executed) of one run on a fresh SQLite file.

    The wall time covers ``runner.run()`` only: opening (and migrating) the store and closing it
    are outside, as they were when the store was synchronous.
    """
    return asyncio.run(_run_once(spec, concurrency))


async def _run_once(spec: Workflow, concurrency: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp:
        async with await Store.open(Path(tmp) / "bench.db") as store:
            executor = NoopExecutor()
            bus = EventBus()
            seen = [0]
            bus.subscribe(lambda _event: seen.__setitem__(0, seen[0] + 1))
            runner = WorkflowRunner(spec, RunStore(store), {"tool_call": executor}, bus, concurrency)
            start = time.perf_counter()
            result = await runner.run()
            wall = time.perf_counter() - start
    if not result.ok or executor.calls != len(spec.tasks):
        raise SystemExit(f"benchmark run failed: {result.state}, {executor.calls} calls, {result.errors}")
    return wall, seen[0], executor.calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-deps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    spec = random_dag(args.tasks, args.seed, args.max_deps)
    edges = sum(len(t.depends_on) for t in spec.tasks)
    print(f"DAG: {args.tasks} no-op tasks, {edges} edges (seed {args.seed}, 0-{args.max_deps} deps each), "
          f"concurrency {args.concurrency}, real SQLite store (WAL, synchronous=NORMAL)")

    walls = []
    events = 0
    for i in range(args.runs):
        wall, events, _ = run_once(spec, args.concurrency)
        walls.append(wall)
        print(f"  run {i + 1}: {wall:.3f} s  ({wall / args.tasks * 1000:.3f} ms/task, {events} events)")
    wall = statistics.median(walls)
    per_task_ms = wall / args.tasks * 1000

    tracemalloc.start()
    run_once(spec, args.concurrency)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    maxrss_mib = maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024

    verdict = "PASS" if per_task_ms < TARGET_MS else "MISS"
    print(f"total wall time (median of {args.runs}): {wall:.3f} s")
    print(f"per-task overhead: {per_task_ms:.3f} ms (target < {TARGET_MS:g} ms) -> {verdict}")
    print(f"peak memory: tracemalloc {peak / 2**20:.1f} MiB (Python allocations during one run), "
          f"ru_maxrss {maxrss_mib:.1f} MiB (whole process)")

    report = {
        "tasks": args.tasks, "edges": edges, "seed": args.seed, "max_deps": args.max_deps,
        "concurrency": args.concurrency, "runs": args.runs,
        "wall_s": [round(w, 4) for w in walls], "wall_s_median": round(wall, 4),
        "per_task_ms": round(per_task_ms, 4), "target_ms": TARGET_MS, "verdict": verdict,
        "events_per_run": events,
        "tracemalloc_peak_mib": round(peak / 2**20, 2), "ru_maxrss_mib": round(maxrss_mib, 1),
        "python": platform.python_version(), "platform": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
