"""The sandbox and the ``python`` tool: each test asserts one containment, with and without bubblewrap."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from smoltui.tools import python_exec, sandbox
from smoltui.tools.base import ToolContext
from smoltui.tools.python_exec import PYTHON_TOOLS
from smoltui.tools.registry import ToolRegistry
from smoltui.tools.sandbox import Limits, run_sandboxed, sandbox_status

REPO = Path(__file__).resolve().parents[1]
HAVE_BWRAP = sandbox._bwrap() is not None
needs_bwrap = pytest.mark.skipif(
    not HAVE_BWRAP, reason=f"bubblewrap is unavailable ({sandbox._probe_bwrap()[1]}): isolation cannot be tested"
)
needs_process_limit = pytest.mark.skipif(
    sandbox.process_limit_mode() == "none",
    reason="running as root without a writable pids cgroup: the kernel does not apply RLIMIT_NPROC to root",
)
FAST = Limits(cpu_s=5, wall_s=10, memory_bytes=512 << 20, max_processes=16, output_bytes=4096)


@pytest.fixture(params=["bwrap", "plain"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test inside bubblewrap and again with bubblewrap made unavailable."""
    if request.param == "bwrap" and not HAVE_BWRAP:
        pytest.skip(f"bubblewrap is unavailable ({sandbox._probe_bwrap()[1]})")
    if request.param == "plain":
        monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    return request.param


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def _ctx(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws, artifacts_dir=ws / "artifacts")


async def _py(code: str, ws: Path, limits: Limits = FAST) -> tuple[sandbox.SandboxResult, str]:
    """Run ``code`` with a unique marker in its command line (to find leftover processes)."""
    marker = f"marker-{uuid.uuid4().hex}"
    result = await run_sandboxed([sys.executable, "-I", "-c", f"# {marker}\n{code}"], workspace=ws, limits=limits)
    return result, marker


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- ordinary runs


async def test_normal_run_through_the_registry(mode: str, ws: Path) -> None:
    registry = ToolRegistry(PYTHON_TOOLS)
    code = "import sys, json\nprint(json.dumps({'a': 6 * 7}))\nprint('oops', file=sys.stderr)"
    result = await registry.call("python", {"code": code}, _ctx(ws))
    assert result.ok, result.error
    out = result.content
    assert out["exit_code"] == 0 and out["stdout"] == '{"a": 42}\n' and out["stderr"] == "oops\n"
    assert out["timed_out"] is False and out["truncated"] is False
    assert out["isolated"] is (mode == "bwrap")
    assert not list(ws.glob(".smoltui-python-*")), "the script file is removed afterwards"


async def test_files_written_in_the_workspace_stay(mode: str, ws: Path) -> None:
    result = await python_exec.python.invoke(
        python_exec.python.arguments(code="open('out.txt', 'w').write('kept')"), _ctx(ws)
    )
    assert result["exit_code"] == 0 and (ws / "out.txt").read_text() == "kept"


def test_schema() -> None:
    (tool,) = PYTHON_TOOLS
    assert tool.name == "python" and tool.risk == "execute"
    assert tool.parameters["required"] == ["code"]
    assert set(tool.parameters["properties"]) == {"code", "timeout_s"}


# --------------------------------------------------------------------------- resource limits


async def test_output_flood_is_truncated(mode: str, ws: Path) -> None:
    code = "import sys\nsys.stdout.write('x' * 20_000_000)\nsys.stderr.write('e' * 1_000_000)"
    started = time.monotonic()
    result, _ = await _py(code, ws)
    assert result.exit_code == 0 and result.truncated
    assert result.stdout == "x" * FAST.output_bytes and result.stderr == "e" * FAST.output_bytes
    assert result.stdout_bytes == 20_000_000 and result.stderr_bytes == 1_000_000
    assert time.monotonic() - started < 8


async def test_endless_flood_is_killed_at_the_wall_time(mode: str, ws: Path) -> None:
    limits = Limits(cpu_s=30, wall_s=1.5, output_bytes=1000)
    result, marker = await _py("import sys\nwhile True: sys.stdout.write('y' * 65536)", ws, limits)
    assert result.timed_out and result.truncated and result.killed_by_signal == signal.SIGKILL
    assert len(result.stdout) == 1000 and result.stdout_bytes > 1000
    assert result.duration_s < 5
    assert _processes_with(marker) == []


async def test_cpu_loop_is_killed_at_the_cpu_limit(mode: str, ws: Path) -> None:
    result, _ = await _py("while True: pass", ws, Limits(cpu_s=1, wall_s=20))
    assert not result.timed_out
    assert result.killed_by_signal in (signal.SIGXCPU, signal.SIGKILL)
    assert result.duration_s < 5


async def test_sleeper_and_its_children_are_killed_at_the_wall_time(mode: str, ws: Path) -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\ntime.sleep(100)"
    result, marker = await _py(code, ws, Limits(wall_s=1))
    assert result.timed_out and result.duration_s < 4
    if mode == "plain" and sandbox.process_limit_mode() != "cgroup":
        pytest.skip("without bubblewrap or a cgroup a child that calls setsid() leaves the process group")
    assert _processes_with(marker) == [], "a child that left the process group survived"


async def test_python_tool_reports_a_timeout(mode: str, ws: Path) -> None:
    result = await ToolRegistry(PYTHON_TOOLS).call("python", {"code": "import time; time.sleep(60)",
                                                               "timeout_s": 1}, _ctx(ws))
    assert not result.ok and result.error_kind == "timeout" and result.duration_s < 5
    assert "timed out after 1s" in result.error


@needs_process_limit
async def test_fork_bomb_hits_the_process_limit(mode: str, ws: Path) -> None:
    code = (
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
        "            time.sleep(60)\n            os._exit(0)\n        n += 1\n"
        "except OSError as error:\n    print('fork failed after', n, error.errno)\n"
    )
    result, marker = await _py(code, ws, Limits(max_processes=16, wall_s=10))
    assert result.stdout.startswith("fork failed after"), result
    forked = int(result.stdout.split()[3])
    assert 0 < forked < 16 and result.stdout.split()[4] == "11"  # EAGAIN
    assert not result.timed_out and result.duration_s < 8
    assert _processes_with(marker) == [], "forked children outlived the run"


@needs_process_limit
async def test_real_fork_bomb_is_contained_and_cleaned_up(mode: str, ws: Path) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result, marker = await _py(code, ws, Limits(max_processes=24, wall_s=2, cpu_s=10))
    assert result.timed_out and result.duration_s < 8
    assert _processes_with(marker) == []
    assert os.getloadavg()  # and we are still here to check


async def test_allocating_10_gb_fails(mode: str, ws: Path) -> None:
    result, _ = await _py("b = bytearray(10 * 2**30)\nprint('allocated')", ws)
    assert result.exit_code == 1 and "MemoryError" in result.stderr and "allocated" not in result.stdout


async def test_file_size_is_limited(mode: str, ws: Path) -> None:
    limits = Limits(file_size_bytes=1 << 20, wall_s=10)
    result, _ = await _py("open('big', 'wb').write(b'z' * (2 << 20))", ws, limits)
    assert result.exit_code == 1 and "File too large" in result.stderr
    assert (ws / "big").stat().st_size <= 1 << 20


async def test_environment_is_minimal(mode: str, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOLTUI_SECRET_TOKEN", "hunter2")
    result, _ = await _py("import os; print(sorted(os.environ))", ws)
    assert "SMOLTUI_SECRET_TOKEN" not in result.stdout and "'HOME'" in result.stdout


# --------------------------------------------------------------------------- isolation (bubblewrap)


@needs_bwrap
async def test_writes_outside_the_workspace_fail(ws: Path) -> None:
    name = f"smoltui-escape-{uuid.uuid4().hex}"
    targets = [Path("/tmp") / name, REPO / name, Path.home() / name, ws.parent / name]
    code = (
        "import sys\nfor path in sys.argv[1:]:\n    try:\n        open(path, 'w').write('x')\n"
        "        print('wrote', path)\n    except OSError as error:\n        print('refused', path, error.errno)\n"
    )
    result = await run_sandboxed([sys.executable, "-I", "-c", code, *map(str, targets)], workspace=ws,
                                 limits=FAST)
    assert result.isolated and result.exit_code == 0
    for target in targets:
        assert not target.exists(), f"{target} was written from inside the sandbox"
    # The project and $HOME are read-only or absent inside; /tmp is a private tmpfs that vanishes.
    if REPO.is_relative_to("/tmp"):
        # A checkout under /tmp (CI) sits inside the sandbox's private tmpfs: the write lands there.
        assert f"wrote {REPO / name}" in result.stdout
    else:
        assert f"refused {REPO / name} 30" in result.stdout  # EROFS
    assert f"refused {Path.home() / name} 30" in result.stdout
    assert f"wrote /tmp/{name}" in result.stdout


@needs_bwrap
async def test_secrets_are_not_readable(ws: Path) -> None:
    secret = ws.parent / "secret.txt"
    secret.write_text("top secret")
    paths = ["/etc/shadow", str(Path.home() / ".ssh"), str(secret), "/root", "/home", "/proc/1/environ"]
    code = (
        "import os, sys\nfor path in sys.argv[1:]:\n    try:\n"
        "        data = os.listdir(path) if os.path.isdir(path) else open(path).read()\n"
        "        print('read', path, data)\n    except OSError as error:\n        print('refused', path, error.errno)\n"
    )
    result = await run_sandboxed([sys.executable, "-I", "-c", code, *paths], workspace=ws, limits=FAST)
    assert "top secret" not in result.stdout and "shadow" not in result.stdout.replace("/etc/shadow", "")
    for line in result.stdout.splitlines():
        kind, path, rest = line.split(" ", 2)
        if kind == "read":  # only the bits of /root the interpreter needs, and a /proc of its own
            assert path in ("/root", "/home", "/proc/1/environ"), line
            assert ".ssh" not in rest
    assert f"refused {secret}" in result.stdout and "refused /etc/shadow" in result.stdout


@needs_bwrap
async def test_network_is_unreachable(ws: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket, sys\ntry:\n    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3)\n"
        "    print('connected')\nexcept OSError as error:\n    print('refused', type(error).__name__)\n"
    )
    try:
        result = await run_sandboxed([sys.executable, "-I", "-c", code, str(port)], workspace=ws, limits=FAST)
        assert result.stdout.startswith("refused"), result
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


@needs_bwrap
async def test_sandboxed_user_is_not_root(ws: Path) -> None:
    result, _ = await _py("import os; print(os.getuid(), os.getgid())", ws)
    assert result.stdout.split() == [str(sandbox.SANDBOX_UID)] * 2


PARENT = """
import asyncio, sys
from pathlib import Path
from smoltui.tools import sandbox
if sys.argv[2] == "plain":
    sandbox._bwrap = lambda: None
asyncio.run(sandbox.run_sandboxed([sys.argv[3], sys.argv[4]], workspace=Path(sys.argv[1]),
                                  limits=sandbox.Limits(wall_s=60)))
"""


def test_child_dies_with_its_parent(mode: str, ws: Path) -> None:
    seconds = f"{50 + uuid.uuid4().int % 10_000 / 1000:.3f}"
    sleep = shutil.which("sleep") or "/usr/bin/sleep"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(ws), mode, sleep, seconds], env=env)
    try:
        deadline, child = time.monotonic() + 10, None
        while child is None and time.monotonic() < deadline:
            for pid in _processes_with(seconds):
                try:
                    if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"sleep"):
                        child = pid
                except OSError:
                    pass
            time.sleep(0.05)
        assert child is not None, "the sandboxed sleep never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while _processes_with(seconds) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(seconds) == [], "the sandboxed child outlived its killed parent"
    finally:
        parent.kill()
        for pid in _processes_with(seconds):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- reduced isolation


def test_status_without_bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    available, detail = sandbox_status()
    assert not available
    assert detail.startswith("bubblewrap is not installed") and "apt install bubblewrap" in detail


@needs_bwrap
def test_status_with_bubblewrap() -> None:
    available, detail = sandbox_status()
    assert available and "no network" in detail and "write budget" in detail


async def test_reduced_isolation_is_told_once(monkeypatch: pytest.MonkeyPatch, ws: Path) -> None:
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(python_exec, "_notice_given", False)
    registry = ToolRegistry(PYTHON_TOOLS)
    first, second = _ctx(ws), _ctx(ws)
    one = await registry.call("python", {"code": "print(1)"}, first)
    two = await registry.call("python", {"code": "print(2)"}, second)
    assert one.content["isolated"] is False and two.content["stdout"] == "2\n"
    assert first.notices == [
        "bubblewrap is not installed: Python code runs with resource limits only, without file-system and "
        "network isolation; install it with `apt install bubblewrap`"
    ]
    assert second.notices == []


@needs_bwrap
async def test_no_notice_when_isolated(monkeypatch: pytest.MonkeyPatch, ws: Path) -> None:
    monkeypatch.setattr(python_exec, "_notice_given", False)
    ctx = _ctx(ws)
    result = await ToolRegistry(PYTHON_TOOLS).call("python", {"code": "print(1)"}, ctx)
    assert result.content["isolated"] is True and ctx.notices == []


async def test_cancelling_the_run_kills_the_child(mode: str, ws: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    task = asyncio.ensure_future(run_sandboxed([sys.executable, "-I", "-c", f"# {marker}\nimport time\n"
                                                "time.sleep(60)"], workspace=ws, limits=FAST))
    deadline = time.monotonic() + 5
    while not _processes_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _processes_with(marker) == []
