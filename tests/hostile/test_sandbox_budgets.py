"""The python tool's write budget against code that tries to fill the disk (or memory) in many small pieces.

A per-file limit alone let 40 files of 64 MB add up to 2.5 GB. With bubblewrap and overlayfs in a user
namespace the sandbox bounds the total: workspace changes, /tmp and /dev/shm draw on one tmpfs, and the
kernel refuses a write past it (ENOSPC). The numbers here are small; the mechanism is the same.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from smoltui.tools import python_exec, sandbox
from smoltui.tools.base import ToolContext
from smoltui.tools.python_exec import PYTHON_TOOLS
from smoltui.tools.registry import ToolRegistry
from smoltui.tools.sandbox import Limits, run_sandboxed

MB = 1 << 20
BUDGET = Limits(cpu_s=10, wall_s=20, memory_bytes=512 * MB, max_processes=16, output_bytes=8192,
                file_size_bytes=4 * MB, write_bytes=8 * MB, write_files=200)
HAVE_BUDGET, WHY_NOT = sandbox.write_budget_status()
needs_budget = pytest.mark.skipif(not HAVE_BUDGET, reason=WHY_NOT)
needs_bwrap = pytest.mark.skipif(sandbox._bwrap() is None, reason=sandbox._probe_bwrap()[1])


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


async def _run(code: str, ws: Path, limits: Limits = BUDGET, *args: str) -> sandbox.SandboxResult:
    return await run_sandboxed([sys.executable, "-I", "-c", code, *args], workspace=ws, limits=limits)


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


FILL = """
import sys
written = 0
for i in range(int(sys.argv[1])):
    try:
        with open(f"{sys.argv[2]}/part-{i}", "wb") as out:
            out.write(b"z" * (3 << 20))
        written += 1
    except OSError as error:
        print("stopped after", written, "files:", error.errno, error.strerror)
        break
else:
    print("wrote all", written)
"""


@needs_budget
async def test_many_files_under_the_file_limit_cannot_add_up_past_the_budget(ws: Path) -> None:
    result = await _run(FILL, ws, BUDGET, "10", ".")  # 10 x 3 MB, each under the 4 MB file limit
    assert result.isolated and result.stdout.startswith("stopped after 2 files: 28 No space left on device")
    assert _bytes_under(ws) <= BUDGET.write_bytes, "more than the budget reached the workspace"
    assert result.written_bytes == 8 * MB and result.workspace_bytes == 8 * MB
    assert result.write_error is not None
    assert result.write_error.startswith(
        "the code used up its write budget of 8 MB for one call (workspace changes, /tmp and /dev/shm "
        "together): it wrote 8 MB in ")
    assert "(8 MB of it in the workspace)" in result.write_error
    assert "what it wrote up to then stays in the workspace" in result.write_error


@needs_budget
async def test_tmp_and_shared_memory_draw_on_the_same_budget(ws: Path) -> None:
    code = (FILL + "\nimport os\ntry:\n    open('/dev/stray', 'w')\nexcept OSError as error:\n"
            "    print('/dev:', error.errno)\n")
    result = await _run(code.replace('f"{sys.argv[2]}/part-{i}"', '["/tmp/a", "/dev/shm/b", "c"][i]'), ws,
                        BUDGET, "3", "")
    assert result.stdout.splitlines() == ["stopped after 2 files: 28 No space left on device", "/dev: 30"]
    assert result.written_bytes == 8 * MB and result.workspace_bytes == 2 * MB
    assert "(2 MB of it in the workspace)" in (result.write_error or "")
    assert (ws / "c").stat().st_size == 2 * MB  # what fitted stays


@needs_budget
async def test_the_number_of_files_is_bounded_too(ws: Path) -> None:
    code = ("import os\nfor i in range(1000):\n    try:\n        open(f'f{i}', 'w').close()\n"
            "    except OSError as error:\n        print('stopped at', i, error.errno)\n        break\n")
    result = await _run(code, ws)
    made = int(result.stdout.split()[2])
    assert result.stdout.split()[3] == "28" and BUDGET.write_files - 8 <= made <= BUDGET.write_files
    assert len(list(ws.iterdir())) == made
    assert "used up its write budget of 200 files and directories" in (result.write_error or "")


@needs_bwrap
async def test_without_the_total_budget_tmp_and_shared_memory_are_still_bounded(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where overlayfs cannot be mounted: each file is bounded, and /tmp and /dev/shm each hold the budget."""
    monkeypatch.setattr(sandbox, "_budget_works", lambda workspace=None: False)
    code = ("import sys\nfor name in ('/tmp/a', '/dev/shm/b'):\n    written = 0\n    for i in range(4):\n"
            "        try:\n            with open(f'{name}{i}', 'wb') as out:\n                out.write(b'z' * (3 << 20))\n"
            "            written += 1\n        except OSError as error:\n"
            "            print(name, written, error.errno)\n            break\n")
    result = await _run(code, ws)
    assert result.isolated and result.write_error is None and result.written_bytes is None
    assert result.stdout.splitlines() == ["/tmp/a 2 28", "/dev/shm/b 2 28"]


@needs_budget
async def test_the_python_tool_says_which_budget_and_how_much(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(python_exec, "WRITE_BUDGET_BYTES", 4 * MB)
    ctx = ToolContext(workspace=ws, artifacts_dir=ws / "artifacts")
    code = "for i in range(5):\n    open(f'out-{i}.bin', 'wb').write(b'x' * (1 << 20))"
    result = await ToolRegistry(PYTHON_TOOLS).call("python", {"code": code}, ctx)
    assert not result.ok and result.error_kind == "failed"
    assert result.error is not None and result.error.startswith(
        "python: the code used up its write budget of 4 MB for one call (workspace changes, /tmp and /dev/shm "
        "together): it wrote 4 MB in ")
    assert result.error.endswith("(exit code 1: OSError: [Errno 28] No space left on device)")
    assert _bytes_under(ws) <= 4 * MB
    small = await ToolRegistry(PYTHON_TOOLS).call("python", {"code": "open('ok.txt', 'w').write('fine')"}, ctx)
    assert small.ok and (ws / "ok.txt").read_text() == "fine"


@needs_budget
async def test_changes_reach_the_workspace_and_links_are_not_followed(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("outside")
    (ws / "keep.txt").write_text("old")
    (ws / "gone.txt").write_text("bye")
    (ws / "from.txt").write_text("moving")
    (ws / "tree" / "sub").mkdir(parents=True)
    (ws / "tree" / "a.txt").write_text("a")
    (ws / "tree" / "sub" / "b.txt").write_text("b")
    (ws / "outlink").symlink_to(outside)
    code = """
import os, shutil
open("keep.txt", "w").write("new")
os.chmod("keep.txt", 0o600)
os.remove("gone.txt")
os.rename("from.txt", "to.txt")
shutil.rmtree("tree")
os.mkdir("tree")
open("tree/new.txt", "w").write("fresh")
os.unlink("outlink")
os.mkdir("outlink")
open("outlink/victim.txt", "w").write("sandbox")
os.symlink("keep.txt", "alias")
os.makedirs("deep/er")
open("deep/er/f.txt", "w").write("deep")
"""
    result = await _run(code, ws)
    assert result.exit_code == 0 and result.write_error is None, result
    assert (ws / "keep.txt").read_text() == "new" and (ws / "keep.txt").stat().st_mode & 0o777 == 0o600
    assert not (ws / "gone.txt").exists() and not (ws / "from.txt").exists()
    assert (ws / "to.txt").read_text() == "moving"
    assert sorted(p.name for p in (ws / "tree").iterdir()) == ["new.txt"]
    assert not (ws / "outlink").is_symlink() and (ws / "outlink" / "victim.txt").read_text() == "sandbox"
    assert (outside / "victim.txt").read_text() == "outside", "the copy back followed a link out"
    assert os.readlink(ws / "alias") == "keep.txt"
    assert (ws / "deep" / "er" / "f.txt").read_text() == "deep"
    assert not [p for p in ws.rglob("*") if ".smoltui-" in p.name], "a temporary file was left behind"


@needs_budget
async def test_files_written_before_the_wall_time_stay(ws: Path) -> None:
    code = "open('partial.txt', 'w').write('half done')\nimport time\ntime.sleep(60)"
    result = await _run(code, ws, Limits(wall_s=1.5))
    assert result.timed_out and result.duration_s < 8
    assert (ws / "partial.txt").read_text() == "half done"


@needs_bwrap
async def test_reduced_write_budget_is_told_once(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_budget_works", lambda workspace=None: False)
    monkeypatch.setattr(python_exec, "_notice_given", False)
    ctx = ToolContext(workspace=ws, artifacts_dir=ws / "artifacts")
    registry = ToolRegistry(PYTHON_TOOLS)
    assert (await registry.call("python", {"code": "print(1)"}, ctx)).ok
    assert (await registry.call("python", {"code": "print(2)"}, ctx)).ok
    assert len(ctx.notices) == 1 and ctx.notices[0].startswith("there is no total write budget")
    assert "each file Python code writes is limited to 64 MB, but not what all of them add up to" in ctx.notices[0]
    assert "no total write budget" in sandbox.sandbox_status()[1]
