"""``smoltui runs --delete RUN_ID…`` / ``runs --prune DAYS`` (cli.workflows.delete_runs_command):
runs go with their artifacts; a run a live process drives is refused in one line."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from smoltui.cli.workflows import delete_runs_command
from smoltui.errors import SmoltuiError
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.store import Store
from smoltui.paths import Paths


async def seed(database: Path) -> tuple[str, str, str]:
    """A finished run from today, one from ten days ago (both with artifacts) and one driven now."""
    async with await Store.open(database) as store:
        runs = RunStore(store)
        ids = []
        for age_days, state in ((0, "succeeded"), (10, "failed")):
            record = await runs.create_run("w", task_ids=["a"])
            await runs.set_run_state(record.id, state)
            at = time.time() - age_days * 86400
            await store.write(lambda conn, at=at, run_id=record.id: conn.execute(
                "UPDATE runs SET created_at = ?, updated_at = ? WHERE id = ?", (at, at, run_id)))
            runs.artifacts_dir(record.id).mkdir(parents=True)
            (runs.artifacts_dir(record.id) / "table.parquet").write_bytes(b"x")
            ids.append(record.id)
        busy = await runs.create_run("w", run_id="busy-run", task_ids=["a"])
        await runs.claim(busy.id)  # this (live) process drives it
        await runs.set_run_state(busy.id, "running")
        return ids[0], ids[1], busy.id


def remaining(database: Path) -> list[str]:
    async def ids() -> list[str]:
        async with await Store.open(database) as store:
            return sorted(r.id for r in await RunStore(store).list_runs())
    return asyncio.run(ids())


def args(home: Path, **options: object) -> argparse.Namespace:
    return argparse.Namespace(home=str(home), delete=None, prune=None, json=False, **options)


def test_runs_delete_removes_runs_and_artifacts_and_refuses_a_running_one(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = Paths.resolve(home).database
    today, old, busy = asyncio.run(seed(database))
    runs_dir = database.parent / "runs"
    ns = args(home)
    ns.delete = [today, busy]
    assert delete_runs_command(ns) == 1
    out, err = capsys.readouterr()
    assert f"deleted run {today}" in out
    assert err.strip() == (f"smoltui: run {busy} is being driven by pid {os.getpid()} on "
                           f"{socket.gethostname()}; cancel it (or let it end) before deleting it")
    assert remaining(database) == sorted([old, busy])
    assert not (runs_dir / today).exists() and (runs_dir / old).exists()

    ns = args(home)
    ns.prune = 7
    assert delete_runs_command(ns) == 0  # only what ended before the cutoff
    assert remaining(database) == [busy] and not (runs_dir / old).exists()
    assert f"deleted run {old}" in capsys.readouterr().out


def test_runs_delete_of_an_unknown_run_is_one_line(home: Path) -> None:
    ns = args(home)
    ns.delete = ["nope"]
    with pytest.raises(SmoltuiError, match="no workflow run nope"):
        delete_runs_command(ns)  # no database yet: none is made to say so
    assert not Paths.resolve(home).database.exists()
