"""Workspace file tools: normal use, limits, and every way out of the workspace refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smoltui.errors import SmoltuiError
from smoltui.tools import filesystem as fs
from smoltui.tools.base import ToolContext, ToolResult
from smoltui.tools.filesystem import FILESYSTEM_TOOLS, ToolError, resolve_inside
from smoltui.tools.registry import ToolRegistry

SECRET = "TOP SECRET: the launch codes\n"

MODES = ["dir_fd", "path"] if fs._USE_DIR_FD else ["path"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run against descriptor-relative opens (Linux, macOS) and the plain-path fallback."""
    monkeypatch.setattr(fs, "_USE_DIR_FD", request.param == "dir_fd")
    return request.param


@pytest.fixture
def ws(tmp_path: Path, mode: str) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


@pytest.fixture
def ctx(tmp_path: Path, ws: Path) -> ToolContext:
    return ToolContext(workspace=ws, artifacts_dir=tmp_path / "artifacts")


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(FILESYSTEM_TOOLS)


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Things outside the workspace a tool must never read, create or change."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    (outdir / "x.txt").write_text(SECRET)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    monkeypatch.setenv("HOME", str(home))
    return {"secret": secret, "outdir": outdir, "id_rsa": home / ".ssh" / "id_rsa", "dangling": tmp_path / "nowhere.txt"}


@pytest.fixture
def links(ws: Path, outside: dict[str, Path]) -> None:
    (ws / "link_file").symlink_to(outside["secret"])
    (ws / "link_dir").symlink_to(outside["outdir"], target_is_directory=True)
    (ws / "dangling").symlink_to(outside["dangling"])
    (ws / "sub").mkdir()
    (ws / "sub" / "deep_link").symlink_to(Path("..") / ".." / "secret.txt")


def snapshot(paths: dict[str, Path]) -> dict[str, tuple[bool, str | None]]:
    return {k: (p.exists(), p.read_text() if p.is_file() else None) for k, p in paths.items()}


def assert_contained(result: ToolResult) -> None:
    assert not result.ok and result.error_kind == "failed", result
    assert "ToolError" in result.error and "outside the workspace" in result.error, result.error
    assert SECRET.strip() not in result.error


# --- the protocol -------------------------------------------------------------------------------------


def test_tools_are_described_and_risk_rated() -> None:
    by_name = {t.name: t for t in FILESYSTEM_TOOLS}
    assert {n: t.risk for n, t in by_name.items()} == {
        "read_file": "read", "write_file": "write", "list_dir": "read", "glob_files": "read", "search_text": "read",
    }
    write = by_name["write_file"].parameters
    assert write["required"] == ["path", "content"] and "ctx" not in write["properties"]
    assert write["properties"]["overwrite"]["default"] is False
    assert issubclass(ToolError, SmoltuiError)


# --- normal use ---------------------------------------------------------------------------------------


async def test_write_then_read(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    result = await registry.call("write_file", {"path": "notes/day1/plan.md", "content": "héllo\nworld\n"}, ctx)
    assert result.ok, result.error
    assert result.content == {"path": "notes/day1/plan.md", "bytes": 13, "created": True}
    assert (ws / "notes" / "day1" / "plan.md").read_text(encoding="utf-8") == "héllo\nworld\n"
    read = await registry.call("read_file", {"path": "notes/day1/plan.md"}, ctx)
    assert read.ok and read.content == {"path": "notes/day1/plan.md", "bytes": 13, "content": "héllo\nworld\n"}
    assert sorted(p.name for p in (ws / "notes" / "day1").iterdir()) == ["plan.md"]  # no temp file left


async def test_absolute_path_inside_the_workspace_is_fine(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    (ws / "a.txt").write_text("inside")
    result = await registry.call("read_file", {"path": str(ws / "a.txt")}, ctx)
    assert result.ok and result.content["content"] == "inside" and result.content["path"] == "a.txt"


async def test_symlink_that_stays_inside_is_followed(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    (ws / "real.txt").write_text("real")
    (ws / "alias.txt").symlink_to("real.txt")
    result = await registry.call("read_file", {"path": "alias.txt"}, ctx)
    assert result.ok and result.content["content"] == "real" and result.content["path"] == "real.txt"


async def test_overwrite_needs_the_flag(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    (ws / "keep.txt").write_text("original")
    refused = await registry.call("write_file", {"path": "keep.txt", "content": "new"}, ctx)
    assert not refused.ok and "already exists" in refused.error and "overwrite=true" in refused.error
    assert (ws / "keep.txt").read_text() == "original"
    (ws / "keep.txt").chmod(0o640)
    replaced = await registry.call("write_file", {"path": "keep.txt", "content": "new", "overwrite": True}, ctx)
    assert replaced.ok and replaced.content["created"] is False
    assert (ws / "keep.txt").read_text() == "new" and (ws / "keep.txt").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in ws.iterdir()) == ["keep.txt"]


async def test_write_refuses_a_directory_and_oversized_content(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    (ws / "d").mkdir()
    result = await registry.call("write_file", {"path": "d", "content": "x", "overwrite": True}, ctx)
    assert not result.ok and "is a directory" in result.error
    big = "x" * (fs.WRITE_LIMIT + 1)
    result = await registry.call("write_file", {"path": "big.txt", "content": big}, ctx)
    assert not result.ok and "over the write limit" in result.error and "1,048,577 bytes" in result.error
    assert not (ws / "big.txt").exists()


async def test_oversized_read_is_refused(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    with open(ws / "huge.log", "wb") as handle:
        handle.truncate(fs.READ_LIMIT + 10)  # sparse: fast to make
    result = await registry.call("read_file", {"path": "huge.log"}, ctx)
    assert not result.ok and "1.0 MiB (1,048,586 bytes)" in result.error and "read limit" in result.error
    (ws / "small.txt").write_text("x" * 100)
    result = await registry.call("read_file", {"path": "small.txt", "max_bytes": 50}, ctx)
    assert not result.ok and "100 bytes" in result.error and "50 bytes" in result.error
    result = await registry.call("read_file", {"path": "huge.log", "max_bytes": 10 * fs.READ_LIMIT}, ctx)
    assert not result.ok and "read limit of 1.0 MiB" in result.error  # the ceiling holds
    result = await registry.call("read_file", {"path": "small.txt", "max_bytes": 0}, ctx)
    assert not result.ok and "max_bytes must be at least 1" in result.error


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"caf\xe9 au lait"])
async def test_binary_read_is_refused(registry: ToolRegistry, ctx: ToolContext, ws: Path, data: bytes) -> None:
    (ws / "blob.bin").write_bytes(data)
    result = await registry.call("read_file", {"path": "blob.bin"}, ctx)
    assert not result.ok and "binary" in result.error and "'blob.bin'" in result.error


async def test_read_missing_and_directory(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    (ws / "d").mkdir()
    for path, fragment in [("nope.txt", "does not exist"), ("no/such/file", "does not exist"),
                           ("d", "is a directory"), (".", "workspace root")]:
        result = await registry.call("read_file", {"path": path}, ctx)
        assert not result.ok and fragment in result.error, (path, result.error)


async def test_list_dir(registry: ToolRegistry, ctx: ToolContext, ws: Path, links: None) -> None:
    (ws / "b.txt").write_text("12345")
    (ws / "a.txt").write_text("")
    (ws / "inner_link").symlink_to("b.txt")
    result = await registry.call("list_dir", {}, ctx)
    assert result.ok and result.content["path"] == "." and result.content["truncated"] is False
    assert result.content["entries"] == [
        {"name": "sub", "type": "dir"},
        {"name": "a.txt", "type": "file", "size": 0},
        {"name": "b.txt", "type": "file", "size": 5},
        {"name": "dangling", "type": "symlink", "inside_workspace": False},
        {"name": "inner_link", "type": "symlink", "inside_workspace": True},
        {"name": "link_dir", "type": "symlink", "inside_workspace": False},
        {"name": "link_file", "type": "symlink", "inside_workspace": False},
    ]
    sub = await registry.call("list_dir", {"path": "sub"}, ctx)
    assert sub.ok and [e["name"] for e in sub.content["entries"]] == ["deep_link"]
    missing = await registry.call("list_dir", {"path": "ghost"}, ctx)
    assert not missing.ok and "does not exist" in missing.error


async def test_list_dir_is_bounded(registry: ToolRegistry, ctx: ToolContext, ws: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(fs, "MAX_LIST_ENTRIES", 3)
    for i in range(5):
        (ws / f"f{i}").write_text("")
    result = await registry.call("list_dir", {}, ctx)
    assert result.ok and len(result.content["entries"]) == 3
    assert result.content["total"] == 5 and result.content["truncated"] is True


async def test_glob_files(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    for rel in ["a.py", "pkg/b.py", "pkg/deep/c.py", "pkg/notes.md", ".git/hooks/x.py", ".venv/lib/y.py"]:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text("")
    result = await registry.call("glob_files", {"pattern": "**/*.py"}, ctx)
    assert result.ok and result.content == {"files": ["a.py", "pkg/b.py", "pkg/deep/c.py"], "count": 3, "truncated": False}
    top = await registry.call("glob_files", {"pattern": "*.py"}, ctx)
    assert top.content["files"] == ["a.py"]
    under = await registry.call("glob_files", {"pattern": "*", "path": "pkg"}, ctx)
    assert under.content["files"] == ["pkg/b.py", "pkg/notes.md"]
    named = await registry.call("glob_files", {"pattern": ".git/**/*.py"}, ctx)
    assert named.content["files"] == [".git/hooks/x.py"]  # skipped dirs still reachable by name


async def test_glob_is_bounded(registry: ToolRegistry, ctx: ToolContext, ws: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(fs, "MAX_GLOB_RESULTS", 2)
    for i in range(4):
        (ws / f"f{i}.txt").write_text("")
    result = await registry.call("glob_files", {"pattern": "*.txt"}, ctx)
    assert result.ok and result.content == {"files": ["f0.txt", "f1.txt"], "count": 2, "truncated": True}


async def test_search_text(registry: ToolRegistry, ctx: ToolContext, ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "main.py").write_text("import os\n\ndef main():\n    return TODO_fix\n")
    (ws / "README.md").write_text("# todo_fix list\n")
    (ws / "image.bin").write_bytes(b"\x00TODO_fix\x00")
    result = await registry.call("search_text", {"query": "TODO_fix"}, ctx)
    assert result.ok and result.content["matches"] == ["src/main.py:4: return TODO_fix"]
    assert result.content["files_skipped"] == 1 and result.content["truncated"] is False
    folded = await registry.call("search_text", {"query": "todo_FIX", "ignore_case": True, "glob": "**/*.md"}, ctx)
    assert folded.content["matches"] == ["README.md:1: # todo_fix list"]
    single = await registry.call("search_text", {"query": "import", "path": "src/main.py"}, ctx)
    assert single.content["matches"] == ["src/main.py:1: import os"]
    (ws / "alias.md").symlink_to("README.md")  # a link that stays inside is searched under its own name
    linked = await registry.call("search_text", {"query": "list", "glob": "alias*"}, ctx)
    assert linked.content["matches"] == ["alias.md:1: # todo_fix list"]
    assert (await registry.call("glob_files", {"pattern": "*.md"}, ctx)).content["files"] == ["README.md", "alias.md"]
    empty = await registry.call("search_text", {"query": ""}, ctx)
    assert not empty.ok and "empty" in empty.error


async def test_search_is_bounded(registry: ToolRegistry, ctx: ToolContext, ws: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(fs, "MAX_SEARCH_MATCHES", 3)
    (ws / "many.txt").write_text("hit\n" * 10)
    result = await registry.call("search_text", {"query": "hit"}, ctx)
    assert result.ok and len(result.content["matches"]) == 3 and result.content["truncated"] is True


# --- containment ---------------------------------------------------------------------------------------

ESCAPES = [
    "../secret.txt",
    "a/../../secret.txt",
    "/etc/passwd",
    "{secret}",  # absolute path to a file outside
    "~/.ssh/id_rsa",
    "link_file",  # symlink inside -> file outside
    "link_dir/x.txt",  # symlinked directory -> outside
    "dangling",  # dangling symlink -> outside
    "sub/deep_link",  # relative symlink climbing out
]


def _fill(path: str, outside: dict[str, Path]) -> str:
    return path.format(secret=outside["secret"])


@pytest.mark.parametrize("path", ESCAPES)
async def test_read_escapes_are_refused(registry, ctx, outside, links, path) -> None:  # noqa: ANN001
    before = snapshot(outside)
    result = await registry.call("read_file", {"path": _fill(path, outside)}, ctx)
    assert_contained(result)
    assert repr(_fill(path, outside)) in result.error  # names the path it refused
    assert snapshot(outside) == before


@pytest.mark.parametrize("path", ESCAPES)
async def test_write_escapes_are_refused(registry, ctx, outside, links, path) -> None:  # noqa: ANN001
    before = snapshot(outside)
    passwd = Path("/etc/passwd").read_bytes() if Path("/etc/passwd").exists() else None
    for overwrite in (False, True):
        result = await registry.call(
            "write_file", {"path": _fill(path, outside), "content": "pwned", "overwrite": overwrite}, ctx
        )
        assert_contained(result)
    assert snapshot(outside) == before
    assert not outside["dangling"].exists()  # the dangling link's target was not created
    if passwd is not None:
        assert Path("/etc/passwd").read_bytes() == passwd


async def test_write_through_dangling_link_creates_nothing(registry, ctx, outside, links, tmp_path) -> None:  # noqa: ANN001
    result = await registry.call("write_file", {"path": "dangling", "content": "pwned", "overwrite": True}, ctx)
    assert_contained(result)
    assert "a symlink leads to" in result.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "outdir", "secret.txt", "ws"]


@pytest.mark.parametrize("path", ["..", "link_dir", "/", "~", "sub/../.."])
async def test_list_dir_escapes_are_refused(registry, ctx, outside, links, path) -> None:  # noqa: ANN001
    assert_contained(await registry.call("list_dir", {"path": path}, ctx))


async def test_glob_and_search_stay_inside(registry, ctx, outside, links) -> None:  # noqa: ANN001
    found = await registry.call("glob_files", {"pattern": "**/*"}, ctx)
    assert found.ok and found.content["files"] == []  # every link leads outside
    for arguments in ({"pattern": "../*"}, {"pattern": "/etc/*"}, {"pattern": "*", "path": "link_dir"}):
        result = await registry.call("glob_files", arguments, ctx)
        assert not result.ok and "outside the workspace" in result.error, arguments
    search = await registry.call("search_text", {"query": "TOP SECRET"}, ctx)
    assert search.ok and search.content["matches"] == []
    for arguments in ({"query": "TOP", "path": ".."}, {"query": "TOP", "path": "link_file"},
                      {"query": "TOP", "glob": "../*"}):
        result = await registry.call("search_text", arguments, ctx)
        assert_contained(result)


# --- resolve_inside and races --------------------------------------------------------------------------


def test_resolve_inside(ws: Path) -> None:
    root = ws.resolve()
    assert resolve_inside(ws, "a/b/../c.txt") == root / "a" / "c.txt"
    assert resolve_inside(ws, ".") == root
    assert resolve_inside(ws, "~not_a_user_here/x") == root / "~not_a_user_here" / "x"
    (ws / "loop").symlink_to("loop")
    with pytest.raises(ToolError, match="cannot be resolved"):
        resolve_inside(ws, "loop/x")
    with pytest.raises(ToolError, match="NUL byte"):
        resolve_inside(ws, "a\x00b")
    with pytest.raises(ToolError, match=r"'\.\.' climbs above"):
        resolve_inside(ws, "../x")
    with pytest.raises(ToolError, match="does not exist"):
        resolve_inside(ws / "missing", "x")


def test_a_symlink_swapped_in_at_the_final_component_is_not_followed(ws: Path, outside: dict[str, Path]) -> None:
    root = ws.resolve()
    target = resolve_inside(root, "report.txt")  # checked while it did not exist ...
    (ws / "report.txt").symlink_to(outside["secret"])  # ... then an attacker swaps a link in
    with pytest.raises(ToolError, match="already exists"):
        fs._write_bytes(root, target, "report.txt", b"pwned", overwrite=False)
    fs._write_bytes(root, target, "report.txt", b"mine", overwrite=True)  # replaces the link itself
    assert outside["secret"].read_text() == SECRET
    assert not (ws / "report.txt").is_symlink() and (ws / "report.txt").read_bytes() == b"mine"
    (ws / "report.txt").unlink()
    (ws / "report.txt").symlink_to(outside["secret"])
    with pytest.raises(ToolError, match="symlink"):
        fs._read_bytes(root, target, "report.txt", fs.READ_LIMIT)


def test_a_directory_swapped_for_a_symlink_is_not_followed(ws: Path, outside: dict[str, Path]) -> None:
    root = ws.resolve()
    target = resolve_inside(root, "new/file.txt")
    (ws / "new").symlink_to(outside["outdir"], target_is_directory=True)
    with pytest.raises(ToolError, match="symlink"):
        fs._write_bytes(root, target, "new/file.txt", b"pwned", overwrite=True)
    with pytest.raises(ToolError, match="symlink"):
        fs._read_bytes(root, resolve_inside(root, "new") / "x.txt", "new/x.txt", fs.READ_LIMIT)
    assert sorted(p.name for p in outside["outdir"].iterdir()) == ["x.txt"]


async def test_refusal_reaches_the_model_as_a_readable_error(registry, ctx, outside) -> None:  # noqa: ANN001
    result = await registry.call("read_file", {"path": "../secret.txt"}, ctx)
    shown = result.for_model()
    assert shown["kind"] == "failed" and "'../secret.txt' is outside the workspace" in shown["error"]
    assert os.fspath(ctx.workspace.resolve()) in shown["error"]
