"""Which workflows there are: YAML files in a few folders, each validated, each with its recent runs.

The TUI's workflow tree shows a :class:`CatalogSnapshot`. :meth:`WorkflowCatalog.scan` walks the
folders and validates each file in a worker thread (re-using the last result while the file's size
and modification time are unchanged), then reads the recent runs of each file from the store.
Whether a file changed is cheap to ask (:meth:`WorkflowCatalog.files_stamp`): the core's watcher
asks it, and says so on the bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smoltui.orchestrator.run_manager import run_state_now
from smoltui.orchestrator.run_store import RunStore
from smoltui.orchestrator.workflow_spec import Problem, WorkflowError, load_workflow
from smoltui.orchestrator.workflow_validate import validate_workflow

WORKFLOW_SUFFIXES = (".yaml", ".yml")
RECENT_RUNS = 5


@dataclass(frozen=True)
class WorkflowFolder:
    label: str
    path: Path


@dataclass(frozen=True)
class RunSummary:
    id: str
    state: str  # run_state_now: "interrupted" for a run whose process died
    created_at: float
    duration_s: float | None  # None while it runs


@dataclass(frozen=True)
class WorkflowEntry:
    path: Path
    folder: str
    workflow_id: str | None
    name: str
    description: str
    variables: dict[str, Any]
    problems: tuple[Problem, ...]
    runs: tuple[RunSummary, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def title(self) -> str:
        return self.name or self.workflow_id or self.path.stem


@dataclass(frozen=True)
class CatalogSnapshot:
    folders: tuple[WorkflowFolder, ...]
    entries: tuple[WorkflowEntry, ...]
    missing: tuple[WorkflowFolder, ...] = ()  # configured folders that do not exist (yet)

    def in_folder(self, folder: WorkflowFolder) -> list[WorkflowEntry]:
        return [entry for entry in self.entries if entry.folder == folder.label]


@dataclass
class _Cached:
    stamp: tuple[int, int]
    entry: WorkflowEntry


@dataclass
class WorkflowCatalog:
    folders: Sequence[WorkflowFolder]
    tools: Mapping[str, Any]
    run_store: RunStore | None = None
    _cache: dict[Path, _Cached] = field(default_factory=dict)

    def files(self) -> list[tuple[WorkflowFolder, Path]]:
        seen: set[Path] = set()
        found: list[tuple[WorkflowFolder, Path]] = []
        for folder in self.folders:
            if not folder.path.is_dir():
                continue
            try:
                children = sorted(folder.path.iterdir())
            except OSError:
                continue
            for path in children:
                resolved = path.resolve()
                if path.suffix in WORKFLOW_SUFFIXES and path.is_file() and resolved not in seen:
                    seen.add(resolved)
                    found.append((folder, resolved))
        return found

    def revalidate(self) -> None:
        """Check every file again at the next scan (the tools it may call changed)."""
        self._cache.clear()

    def files_stamp(self) -> tuple[Any, ...]:
        """Changes when a workflow file appears, goes, or is edited (blocking: a few stat calls)."""
        stamps = []
        for _, path in self.files():
            try:
                stat = path.stat()
            except OSError:
                continue
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    async def scan(self) -> CatalogSnapshot:
        entries = await asyncio.to_thread(self._scan_files)
        runs_by_file = await self._runs_by_file()
        entries = [_with_runs(entry, runs_by_file.get(str(entry.path), ())) for entry in entries]
        missing = tuple(folder for folder in self.folders if not folder.path.is_dir())
        return CatalogSnapshot(tuple(self.folders), tuple(entries), missing)

    def _scan_files(self) -> list[WorkflowEntry]:
        entries = []
        for folder, path in self.files():
            entry = self._entry(folder, path)
            if entry is not None:
                entries.append(entry)
        return entries

    def _entry(self, folder: WorkflowFolder, path: Path) -> WorkflowEntry | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp and cached.entry.folder == folder.label:
            return cached.entry
        entry = describe(path, folder.label, self.tools)
        self._cache[path] = _Cached(stamp, entry)
        return entry

    async def _runs_by_file(self) -> dict[str, list[RunSummary]]:
        if self.run_store is None:
            return {}
        grouped: dict[str, list[RunSummary]] = {}
        for record in await self.run_store.list_runs(limit=500):
            if not record.file or len(grouped.get(record.file, ())) >= RECENT_RUNS:
                continue
            state = run_state_now(record)
            duration = None if state.active else max(0.0, record.updated_at - record.created_at)
            grouped.setdefault(record.file, []).append(RunSummary(record.id, state, record.created_at, duration))
        return grouped


def describe(path: Path, folder: str, tools: Mapping[str, Any]) -> WorkflowEntry:
    """One file: its name and variables when it parses, its problems either way."""
    problems = tuple(validate_workflow(path, tools=tools))
    try:
        spec = load_workflow(path).spec
    except WorkflowError:
        return WorkflowEntry(path, folder, None, path.stem, "", {}, problems)
    return WorkflowEntry(path, folder, spec.id, spec.name, spec.description or "", dict(spec.variables), problems)


def _with_runs(entry: WorkflowEntry, runs: Iterable[RunSummary]) -> WorkflowEntry:
    from dataclasses import replace

    return replace(entry, runs=tuple(runs))


def default_folders(project_dir: Path, user_dir: Path, configured: Iterable[str]) -> list[WorkflowFolder]:
    """The project's ``workflows/``, the user's workflow folder, then the configured ones."""
    folders = [WorkflowFolder("project", (project_dir / "workflows").resolve()),
               WorkflowFolder("mine", user_dir.resolve())]
    for raw in configured:
        path = Path(raw).expanduser().resolve()
        if all(path != f.path for f in folders):
            folders.append(WorkflowFolder(raw, path))
    return folders
