"""Workspace file tools: read, write, list, glob and search, strictly inside ``ctx.workspace``.

Every path a model or workflow hands us goes through :func:`resolve_inside` first: absolute paths
outside the root, ``..`` escapes, ``~`` and symlinks (at any component, the last one and dangling
ones included) that lead outside are refused with a :class:`ToolError` naming the path and why.

Resolving a path and then opening it leaves a window in which a directory could be swapped for a
symlink. Where the OS allows (Linux, macOS) the file is therefore reached from an open descriptor of
the workspace root one component at a time with ``O_NOFOLLOW``, so a symlink swapped in anywhere
makes the open fail instead of being followed; writes go to a temporary file opened with
``O_EXCL | O_NOFOLLOW`` in that directory and are renamed into place. Elsewhere the path is checked
again after directories are created and the final open still refuses a symlink.

Only the file contents are bounded here; :data:`smoltui.tools.registry.MAX_RESULT_CHARS` still caps
what the model sees of a result.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smoltui.errors import SmoltuiError
from smoltui.tools.base import Tool, ToolContext, tool

READ_LIMIT = 1 << 20  # bytes; a larger file is refused, never cut
WRITE_LIMIT = 1 << 20
MAX_LIST_ENTRIES = 500
MAX_GLOB_RESULTS = 500
MAX_SEARCH_MATCHES = 200
MAX_WALK_ENTRIES = 20_000  # directory entries a glob or search looks at before it stops
MAX_LINE_CHARS = 300
# Walked past unless the pattern names them literally (``.git/config`` still works).
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not hang a read
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
# Reach files through directory descriptors (openat & co.) where the platform has them.
_USE_DIR_FD = bool(
    _NOFOLLOW
    and hasattr(os, "O_DIRECTORY")
    and {os.open, os.mkdir, os.stat, os.unlink, os.rename, os.link} <= os.supports_dir_fd
    and os.scandir in os.supports_fd
)


class ToolError(SmoltuiError):
    """A tool refused or could not do what it was asked; the message names the path and why."""


# ---------------------------------------------------------------------------------------------------
# containment


def workspace_root(workspace: Path) -> Path:
    """The resolved workspace root; it must exist and be a directory."""
    try:
        root = Path(workspace).expanduser().resolve(strict=True)
    except FileNotFoundError:
        raise ToolError(f"the workspace {workspace} does not exist") from None
    except (OSError, RuntimeError) as error:
        raise ToolError(f"the workspace {workspace} cannot be used: {error}") from error
    if not root.is_dir():
        raise ToolError(f"the workspace {root} is not a directory")
    return root


def resolve_inside(workspace: Path, path: str | os.PathLike[str]) -> Path:
    """``path`` (relative to the workspace, or absolute) resolved, if it lies inside the workspace.

    Symlinks are followed (dangling ones too) before the check, so a link inside the workspace that
    points outside is refused just like ``../x`` or ``/etc/passwd``. Raises :class:`ToolError`.
    """
    root = workspace_root(workspace)
    raw = os.fspath(path)
    if "\x00" in raw:
        raise ToolError(f"path {raw!r} contains a NUL byte")
    given = Path(raw)
    expanded = given
    if raw.startswith("~"):
        with contextlib.suppress(RuntimeError):  # no home directory: a literal name then
            expanded = given.expanduser()
    joined = root / expanded
    try:
        resolved = joined.resolve(strict=False)
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
        raise ToolError(f"path {raw!r} cannot be resolved: {error}") from error
    if resolved.is_relative_to(root):
        return resolved
    if expanded != given:
        why = "'~' is the home directory"
    elif not Path(os.path.normpath(joined)).is_relative_to(root):
        why = "absolute paths must lie under the workspace root" if given.is_absolute() else (
            "'..' climbs above the workspace root")
    else:
        why = f"a symlink leads to {resolved}"
    raise ToolError(f"path {raw!r} is outside the workspace {root} ({why})")


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() or "."


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} bytes"


class _Dir:
    """A directory inside the workspace: an open descriptor where the OS allows, else a checked path."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _where(self, name: str) -> tuple[str | Path, dict[str, int]]:
        return (name, {"dir_fd": self.fd}) if self.fd is not None else (self.path / name, {})

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        where, kw = self._where(name)
        return os.open(where, flags | _CLOEXEC | _BINARY, mode, **kw)

    def lstat(self, name: str) -> os.stat_result | None:
        where, kw = self._where(name)
        try:
            return os.stat(where, follow_symlinks=False, **kw)
        except FileNotFoundError:
            return None

    def unlink(self, name: str) -> None:
        where, kw = self._where(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where, **kw)

    def replace(self, src: str, dst: str) -> None:
        if self.fd is not None:
            os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            os.replace(self.path / src, self.path / dst)

    def link(self, src: str, dst: str) -> None:
        if self.fd is not None:
            os.link(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            os.link(self.path / src, self.path / dst)

    def scandir(self) -> Iterator[os.DirEntry[Any]]:
        return os.scandir(self.fd if self.fd is not None else self.path)  # type: ignore[return-value]


def _component_error(raw: str, part: str, error: OSError, dir_fd: int | None = None) -> ToolError:
    swapped = error.errno == errno.ELOOP
    if error.errno == errno.ENOTDIR and dir_fd is not None:  # Linux: O_DIRECTORY | O_NOFOLLOW on a link
        with contextlib.suppress(OSError):
            swapped = stat.S_ISLNK(os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    if swapped:
        return ToolError(f"path {raw!r} refused: {part!r} became a symlink while it was being opened "
                         "(it may lead outside the workspace)")
    if error.errno == errno.ENOTDIR:
        return ToolError(f"path {raw!r} cannot be used: {part!r} is not a directory")
    return ToolError(f"cannot open {raw!r}: {error.strerror or error}")


def _open_dir(root: Path, directory: Path, raw: str, *, create: bool = False) -> _Dir:
    """Open ``directory`` (resolved, inside ``root``), making it first if ``create``.

    With descriptors, each component is opened with ``O_NOFOLLOW`` relative to the one before, so no
    symlink is ever followed on the way; without, the path is resolved and checked again.
    """
    parts = directory.relative_to(root).parts
    if not _USE_DIR_FD:
        if create:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ToolError(f"cannot create the directory for {raw!r}: {error.strerror or error}") from error
        try:
            unchanged = resolve_inside(root, directory) == directory
        except ToolError:
            unchanged = False
        if not unchanged:
            raise ToolError(f"path {raw!r} refused: a symlink appeared on the way while it was being opened "
                            "(it may lead outside the workspace)")
        if not directory.exists():
            raise ToolError(f"path {raw!r} does not exist")
        if not directory.is_dir():
            raise ToolError(f"path {raw!r} cannot be used: {_rel(root, directory)!r} is not a directory")
        return _Dir(directory, None)
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as error:
        raise ToolError(f"cannot open the workspace {root}: {error.strerror or error}") from error
    try:
        for part in parts:
            child = _open_child_dir(fd, part, raw, create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return _Dir(directory, fd)


def _open_child_dir(fd: int, part: str, raw: str, create: bool) -> int:
    flags = _DIR_FLAGS | _NOFOLLOW
    try:
        return os.open(part, flags, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise ToolError(f"path {raw!r} does not exist") from None
    except OSError as error:
        raise _component_error(raw, part, error, fd) from error
    try:
        os.mkdir(part, 0o777, dir_fd=fd)
    except FileExistsError:
        pass
    except OSError as error:
        raise ToolError(f"cannot create directory {part!r} for {raw!r}: {error.strerror or error}") from error
    try:
        return os.open(part, flags, dir_fd=fd)
    except OSError as error:
        raise _component_error(raw, part, error, fd) from error


# ---------------------------------------------------------------------------------------------------
# reading and writing


def _read_bytes(root: Path, target: Path, raw: str, limit: int) -> bytes:
    """The bytes of a regular file inside the workspace, refusing one over ``limit``."""
    if target == root:
        raise ToolError(f"path {raw!r} is the workspace root, a directory; use list_dir")
    with _open_dir(root, target.parent, raw) as parent:
        info = parent.lstat(target.name)
        if info is None:
            raise ToolError(f"path {raw!r} does not exist")
        if stat.S_ISDIR(info.st_mode):
            raise ToolError(f"path {raw!r} is a directory; use list_dir")
        if stat.S_ISLNK(info.st_mode):
            raise ToolError(f"path {raw!r} refused: it became a symlink while it was being opened")
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"path {raw!r} is not a regular file")
        if info.st_size > limit:
            raise _too_big(raw, info.st_size, limit)
        try:
            fd = parent.open(target.name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
        except OSError as error:
            raise _component_error(raw, target.name, error) from error
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise ToolError(f"path {raw!r} is not a regular file")
        if opened.st_size > limit:
            raise _too_big(raw, opened.st_size, limit)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _too_big(raw, len(data), limit)
    return data


def _too_big(raw: str, size: int, limit: int) -> ToolError:
    return ToolError(f"path {raw!r} is {_size(size)} ({size:,} bytes), over the read limit of "
                     f"{_size(limit)}; refusing to read it")


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data


def _write_bytes(root: Path, target: Path, raw: str, data: bytes, overwrite: bool) -> bool:
    """Write ``data`` to ``target`` atomically; True when the file is new."""
    if target == root:
        raise ToolError(f"path {raw!r} is the workspace root, a directory")
    name = target.name
    with _open_dir(root, target.parent, raw, create=True) as parent:
        existing = parent.lstat(name)
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise ToolError(f"path {raw!r} is a directory")
            if not overwrite:
                raise _exists(raw, existing.st_size)
        temp = f".{name[:80]}.{secrets.token_hex(6)}.tmp"
        try:
            fd = parent.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
        except OSError as error:
            raise ToolError(f"cannot write {raw!r}: {error.strerror or error}") from error
        try:
            with os.fdopen(fd, "wb") as handle:
                if existing is not None and stat.S_ISREG(existing.st_mode) and hasattr(os, "fchmod"):
                    os.fchmod(handle.fileno(), stat.S_IMODE(existing.st_mode))
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                # rename replaces whatever sits at ``name`` (a symlink too) and never follows it
                parent.replace(temp, name)
            else:
                _place_new(parent, temp, name, raw)
        except OSError as error:
            raise ToolError(f"cannot write {raw!r}: {error.strerror or error}") from error
        finally:
            parent.unlink(temp)
    return existing is None


def _place_new(parent: _Dir, temp: str, name: str, raw: str) -> None:
    """Put ``temp`` at ``name`` only if nothing is there (a hard link cannot clobber)."""
    try:
        parent.link(temp, name)
        return
    except FileExistsError:
        info = parent.lstat(name)
        raise _exists(raw, info.st_size if info else 0) from None
    except (OSError, NotImplementedError):  # no hard links on this filesystem
        pass
    info = parent.lstat(name)
    if info is not None:
        raise _exists(raw, info.st_size)
    parent.replace(temp, name)


def _exists(raw: str, size: int) -> ToolError:
    return ToolError(f"path {raw!r} already exists ({_size(size)}); pass overwrite=true to replace it")


def _limit(value: int, ceiling: int, name: str) -> int:
    if value < 1:
        raise ToolError(f"{name} must be at least 1, not {value}")
    return min(value, ceiling)


# ---------------------------------------------------------------------------------------------------
# walking (glob and search)


def _pattern_parts(pattern: str) -> tuple[str, ...]:
    if not pattern.strip():
        raise ToolError("the glob pattern is empty")
    if pattern.startswith(("/", "\\", "~")) or Path(pattern).is_absolute():
        raise ToolError(f"glob pattern {pattern!r} is outside the workspace (patterns are relative to path)")
    parts = tuple(p for p in pattern.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ToolError(f"glob pattern {pattern!r} is outside the workspace ('..' is not allowed)")
    collapsed: list[str] = []
    for part in parts:
        if not (part == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(part)
    return tuple(collapsed)


def _matches(parts: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key not in memo:
            if i == len(parts):
                memo[key] = j == len(segments)
            elif parts[i] == "**":
                memo[key] = go(i + 1, j) or (j < len(segments) and go(i, j + 1))
            else:
                memo[key] = j < len(segments) and fnmatch.fnmatchcase(segments[j], parts[i]) and go(i + 1, j + 1)
        return memo[key]

    return go(0, 0)


class _Walk:
    """Files under ``base`` whose path relative to it matches a glob; symlinks are never descended."""

    def __init__(self, root: Path, base: Path, pattern: str) -> None:
        self.root = root
        self.base = base
        self.parts = _pattern_parts(pattern)
        self.fixed = next((i for i, p in enumerate(self.parts) if p == "**"), len(self.parts))
        self.seen = 0
        self.exhausted = False  # stopped at MAX_WALK_ENTRIES

    def _descend(self, segments: tuple[str, ...]) -> bool:
        depth = len(segments) - 1
        if self.fixed == len(self.parts) and len(segments) >= len(self.parts):
            return False
        name = segments[-1]
        if depth < self.fixed and self.parts[depth] == name:
            return True  # named literally: walked even if it is in SKIP_DIRS
        if name in SKIP_DIRS:
            return False
        return depth >= self.fixed or fnmatch.fnmatchcase(name, self.parts[depth])

    def files(self) -> Iterator[tuple[Path, Path]]:
        """(the path as found, the file it is): they differ for a symlink that stays inside."""
        for current, dirnames, filenames in os.walk(self.base, followlinks=False):
            here = Path(current)
            prefix = here.relative_to(self.base).parts
            self.seen += len(dirnames) + len(filenames)
            if self.seen > MAX_WALK_ENTRIES:
                self.exhausted = True
                return
            dirnames[:] = sorted(d for d in dirnames if self._descend((*prefix, d)))
            for name in sorted(filenames):
                if not _matches(self.parts, (*prefix, name)):
                    continue
                found = real = here / name
                if found.is_symlink():
                    try:
                        real = resolve_inside(self.root, found)
                    except ToolError:
                        continue  # leads outside: not ours to show
                    if not real.is_file():
                        continue
                yield found, real


# ---------------------------------------------------------------------------------------------------
# the tools


@tool(risk="read")
def read_file(path: str, max_bytes: int = READ_LIMIT, *, ctx: ToolContext) -> dict[str, Any]:
    """Read a UTF-8 text file inside the workspace.

    Files over the size limit and binary files are refused, never cut short.

    Args:
        path: File path, relative to the workspace root.
        max_bytes: Refuse the file if it is larger than this many bytes (at most 1 MiB).
    """
    root = workspace_root(ctx.workspace)
    target = resolve_inside(root, path)
    data = _read_bytes(root, target, path, _limit(max_bytes, READ_LIMIT, "max_bytes"))
    if _is_binary(data):
        raise ToolError(f"path {path!r} is a binary file ({_size(len(data))}); only text files can be read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ToolError(f"path {path!r} is not UTF-8 text (binary file?): {error.reason} at byte {error.start}") from None
    return {"path": _rel(root, target), "bytes": len(data), "content": text}


@tool(risk="write")
def write_file(path: str, content: str, overwrite: bool = False, *, ctx: ToolContext) -> dict[str, Any]:
    """Write a UTF-8 text file inside the workspace, creating parent directories as needed.

    The file is written atomically (a temporary file renamed into place). An existing file is only
    replaced when overwrite is true.

    Args:
        path: File path, relative to the workspace root.
        content: The complete text to write (at most 1 MiB as UTF-8).
        overwrite: Replace the file if it already exists.
    """
    root = workspace_root(ctx.workspace)
    target = resolve_inside(root, path)
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ToolError(f"content for {path!r} is not valid text: {error.reason} at character {error.start}") from None
    if len(data) > WRITE_LIMIT:
        raise ToolError(f"content for {path!r} is {_size(len(data))} ({len(data):,} bytes), over the write "
                        f"limit of {_size(WRITE_LIMIT)}; refusing to write it")
    created = _write_bytes(root, target, path, data, overwrite)
    return {"path": _rel(root, target), "bytes": len(data), "created": created}


@tool(risk="read")
def list_dir(path: str = ".", *, ctx: ToolContext) -> dict[str, Any]:
    """List a directory inside the workspace: each entry's name, type and size, directories first.

    Args:
        path: Directory path, relative to the workspace root.
    """
    root = workspace_root(ctx.workspace)
    target = resolve_inside(root, path)
    entries: list[dict[str, Any]] = []
    with _open_dir(root, target, path) as directory:
        try:
            with directory.scandir() as scan:
                for entry in scan:
                    entries.append(_describe(root, target, entry))
        except OSError as error:
            raise ToolError(f"cannot list {path!r}: {error.strerror or error}") from error
    entries.sort(key=lambda e: (e["type"] != "dir", e["name"]))
    return {
        "path": _rel(root, target),
        "entries": entries[:MAX_LIST_ENTRIES],
        "total": len(entries),
        "truncated": len(entries) > MAX_LIST_ENTRIES,
    }


def _describe(root: Path, directory: Path, entry: os.DirEntry[Any]) -> dict[str, Any]:
    name = entry.name
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return {"name": name, "type": "unknown"}
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        try:
            resolve_inside(root, directory / name)
            inside = True
        except ToolError:
            inside = False
        return {"name": name, "type": "symlink", "inside_workspace": inside}
    if stat.S_ISDIR(mode):
        return {"name": name, "type": "dir"}
    if stat.S_ISREG(mode):
        return {"name": name, "type": "file", "size": info.st_size}
    return {"name": name, "type": "other"}


@tool(risk="read")
def glob_files(pattern: str, path: str = ".", *, ctx: ToolContext) -> dict[str, Any]:
    """Find files inside the workspace whose path matches a glob pattern.

    Paths are matched relative to path; '**' matches any number of directories. Symlinked
    directories are not descended and directories such as .git, .venv and node_modules are skipped
    unless the pattern names them.

    Args:
        pattern: Glob pattern such as '**/*.py' or 'docs/*.md'.
        path: Directory to search from, relative to the workspace root.
    """
    root = workspace_root(ctx.workspace)
    base = resolve_inside(root, path)
    if not base.is_dir():
        raise ToolError(f"path {path!r} is not a directory")
    walk = _Walk(root, base, pattern)
    found: list[str] = []
    truncated = False
    for file, _real in walk.files():
        if len(found) == MAX_GLOB_RESULTS:
            truncated = True
            break
        found.append(_rel(root, file))
    return {"files": found, "count": len(found), "truncated": truncated or walk.exhausted}


@tool(risk="read")
def search_text(
    query: str, path: str = ".", glob: str = "**/*", ignore_case: bool = False, *, ctx: ToolContext
) -> dict[str, Any]:
    """Search text files inside the workspace for a literal string; each match is 'file:line: text'.

    Binary files and files over 1 MiB are skipped.

    Args:
        query: The literal text to look for.
        path: Directory (or single file) to search, relative to the workspace root.
        glob: Only search files whose path relative to path matches this glob pattern.
        ignore_case: Match regardless of letter case.
    """
    if not query:
        raise ToolError("the search query is empty")
    root = workspace_root(ctx.workspace)
    base = resolve_inside(root, path)
    needle = query.casefold() if ignore_case else query
    if base.is_file():
        files: Iterator[tuple[Path, Path]] = iter([(base, base)])
        walk = None
    elif base.is_dir():
        walk = _Walk(root, base, glob)
        files = walk.files()
    else:
        raise ToolError(f"path {path!r} does not exist")
    matches: list[str] = []
    searched = skipped = 0
    truncated = False
    for file, real in files:
        rel = _rel(root, file)
        try:
            data = _read_bytes(root, real, rel, READ_LIMIT)
        except ToolError:
            skipped += 1
            continue
        if _is_binary(data):
            skipped += 1
            continue
        searched += 1
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if needle in (line.casefold() if ignore_case else line):
                if len(matches) == MAX_SEARCH_MATCHES:
                    truncated = True
                    break
                matches.append(f"{rel}:{number}: {line.strip()[:MAX_LINE_CHARS]}")
        if truncated:
            break
    return {
        "matches": matches,
        "files_searched": searched,
        "files_skipped": skipped,
        "truncated": truncated or bool(walk and walk.exhausted),
    }


FILESYSTEM_TOOLS: list[Tool] = [read_file, write_file, list_dir, glob_files, search_text]
