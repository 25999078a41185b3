"""``smoltui show RUN [TASK]``: what a run made. Text is rendered (Markdown on a terminal, as
written through a pipe), tables as tables (their first rows and size), files as their paths.

In-process it reads the store; through a server it asks the API; both describe the outputs with
:func:`smoltui.run_outputs.describe`, so they print the same thing. ``smoltui run`` ends with the
same rendering of its final tasks (see :func:`final_outputs`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

from smoltui.cli.common import paths_of
from smoltui.cli.remote import through_server
from smoltui.errors import SmoltuiError


def run(args: argparse.Namespace) -> int:
    served = through_server(args, lambda client: _served(args, client))
    if served is not None:
        return served
    paths = paths_of(args)
    if not paths.database.exists():  # never create a database to say so
        raise SmoltuiError(f"no workflow run {args.run_id}")
    return asyncio.run(_local(args, paths.database))


async def _local(args: argparse.Namespace, database: Any) -> int:
    from smoltui.orchestrator.run_store import RunStore
    from smoltui.orchestrator.store import Store

    async with await Store.open(database) as store:
        run_store = RunStore(store)
        if await run_store.find_run(args.run_id) is None:
            raise SmoltuiError(f"no workflow run {args.run_id}")
        records = await run_store.task_records(args.run_id)
        states = {task_id: record.state for task_id, record in records.items()}
        chosen = _chosen(args, states)
        outputs = {task_id: await local_outputs(run_store, args.run_id, records[task_id]) for task_id in chosen}
    return _print(args, states, outputs)


async def local_outputs(run_store: Any, run_id: str, record: Any) -> dict[str, Any]:
    """One task's outputs described (tables with their first rows) from the store."""
    from smoltui.run_outputs import describe

    return await asyncio.to_thread(describe, run_id, record.outputs or {}, run_store.runs_dir, True)


async def _served(args: argparse.Namespace, client: Any) -> int:
    found = await client.run(args.run_id)
    states = {task["task_id"]: task["state"] for task in found["tasks"]}
    chosen = _chosen(args, states)
    outputs = {task_id: (await client.task_outputs(args.run_id, task_id))["outputs"] for task_id in chosen}
    return _print(args, states, outputs)


def _chosen(args: argparse.Namespace, states: Mapping[str, str]) -> list[str]:
    if args.task_id is not None:
        if args.task_id not in states:
            raise SmoltuiError(f"run {args.run_id} has no task {args.task_id!r}")
        return [args.task_id]
    return list(states)


def _print(args: argparse.Namespace, states: Mapping[str, str], outputs: Mapping[str, Mapping[str, Any]]) -> int:
    from smoltui.run_outputs import print_outputs

    made = {task_id: values for task_id, values in outputs.items() if values or args.task_id is not None}
    if args.json:
        print(json.dumps({"run_id": args.run_id, "tasks": {t: {"state": states[t], "outputs": v} for t, v in made.items()}},
                         ensure_ascii=False, indent=2, default=str))
        return 0
    if not made:
        print(f"run {args.run_id} has no outputs yet ({_counts(states)})")
        return 0
    if args.task_id is not None and states[args.task_id] != "succeeded" and not made[args.task_id]:
        print(f"{args.task_id}: {states[args.task_id]} (no outputs)")
        return 0
    print_outputs(made, stream=sys.stdout, run_id=args.run_id)
    return 0


def _counts(states: Mapping[str, str]) -> str:
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no tasks"


def final_outputs(run_id: str, outputs: Mapping[str, Mapping[str, Any]]) -> None:
    """The end of ``smoltui run``: the final tasks' outputs, each cut to a few lines."""
    from smoltui.run_outputs import RUN_END_LINES, print_outputs

    made = {task_id: values for task_id, values in outputs.items() if values}
    if made:
        print_outputs(made, stream=sys.stdout, run_id=run_id, max_lines=RUN_END_LINES)


__all__ = ["final_outputs", "local_outputs", "run"]
