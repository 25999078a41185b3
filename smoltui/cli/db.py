"""``smoltui db check`` and ``smoltui db backup FILE``: the history database, checked or copied.

Both read the database only: ``check`` runs SQLite's integrity check on a read-only connection,
``backup`` copies it with SQLite's online backup API (one consistent snapshot, even while another
smoltui writes to it) and checks the copy before giving it the name asked for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smoltui.cli.common import paths_of

PROBLEMS_SHOWN = 20


def run(args: argparse.Namespace) -> int:
    database = paths_of(args).database
    if args.db_command == "check":
        return _check(database)
    return _backup(database, Path(args.file).expanduser(), force=args.force)


def _check(database: Path) -> int:
    from smoltui.orchestrator.store import inspect_file

    if not database.exists():
        print(f"no database at {database} yet: nothing to check")
        return 0
    problems = inspect_file(database, thorough=True, limit=PROBLEMS_SHOWN + 1)
    if not problems:
        print(f"{database}: ok")
        return 0
    shown = problems[:PROBLEMS_SHOWN]
    more = " (and more)" if len(problems) > PROBLEMS_SHOWN else ""
    print(f"{database} is damaged: {len(shown)} problem{'s' if len(shown) != 1 else ''}{more}")
    for problem in shown:
        print(f"  {problem}")
    print("restore a backup, or move the file away to start a new history")
    return 1


def _backup(database: Path, dest: Path, *, force: bool) -> int:
    from smoltui.orchestrator.store import backup

    backup(database, dest, force=force)
    print(f"backed up {database} to {dest}")
    return 0
