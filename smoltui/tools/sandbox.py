"""Run an untrusted command with resource limits and, where bubblewrap works, inside a sandbox.

Two layers:

* **Resource limits**, always: ``setrlimit`` in the child before ``exec`` (CPU seconds, address space,
  file size, open files, processes), a wall-clock limit that kills the whole process group (and, as
  root, the whole pids cgroup), and stdout/stderr read incrementally with only the first
  ``Limits.output_bytes`` of each kept. The child also gets ``PR_SET_PDEATHSIG`` so it dies with us.
* **Isolation**, when ``bwrap`` (bubblewrap) is installed and can create namespaces: a new mount,
  network, pid, ipc, uts, cgroup and user namespace; a read-only view of ``/usr`` (plus the
  ``/bin``/``/lib*`` links), the few ``/etc`` files the dynamic loader needs and the Python prefixes;
  a private ``/tmp``; the workspace as the only writable host directory; no network at all (only a
  down loopback in its own namespace); a cleared environment; ``--die-with-parent``; ``--new-session``.
  Nothing else of the host is visible: no ``/root``, ``/home``, ``/etc/shadow``, ``~/.ssh``, ``/run``.

The process limit needs care. ``RLIMIT_NPROC`` counts every task of the *real user*, and the kernel
does not enforce it at all for root (uid 0), not even through a user namespace that maps root to
``nobody`` (the host uid stays 0). So:

* as a normal user the limit is set to the tasks the user already runs plus ``max_processes``;
* as root a ``pids`` cgroup with ``pids.max = max_processes`` is made for each run when a cgroup
  hierarchy with the pids controller is writable (cgroup v1 ``pids`` or cgroup v2 with ``pids`` in the
  root's ``subtree_control``); it also lets us kill every process of the run at the end;
* as root without such a cgroup nothing bounds the process count except the wall-clock limit (and,
  with bubblewrap, the pid namespace that dies with the run). :func:`sandbox_status` says which applies.

Without bubblewrap the command runs as the calling user with the limits only: it can read and write
whatever that user can and reach the network. :func:`sandbox_status` tells callers so they can say it
to the user once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID = 65534  # "nobody" inside the user namespace
_PR_SET_PDEATHSIG = 1
_counter = itertools.count()
try:  # loaded here: a dlopen between fork and exec can deadlock
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _LIBC = None


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    cpu_s: int = 30  # RLIMIT_CPU: SIGXCPU at cpu_s, SIGKILL one second later
    memory_bytes: int = 1 << 30  # RLIMIT_AS, per process
    max_processes: int = 64  # RLIMIT_NPROC (normal user) or pids.max of a cgroup (root)
    file_size_bytes: int = 64 << 20  # RLIMIT_FSIZE; also the size of the private /tmp
    open_files: int = 256  # RLIMIT_NOFILE
    wall_s: float = 30.0  # then the whole process group / cgroup is killed
    output_bytes: int = 64 << 10  # kept per stream (stdout, stderr); the rest is counted


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int  # negative signal number when killed by a signal
    stdout: str
    stderr: str
    truncated: bool  # some output was dropped (see stdout_bytes / stderr_bytes for the totals)
    timed_out: bool  # killed at the wall-clock limit
    killed_by_signal: int | None
    duration_s: float
    isolated: bool  # ran inside bubblewrap
    stdout_bytes: int = 0
    stderr_bytes: int = 0


# --------------------------------------------------------------------------- availability


def _bwrap() -> str | None:
    """Path of a *working* bwrap, or None (the tests patch this)."""
    return _probe_bwrap()[0]


@functools.cache
def _probe_bwrap() -> tuple[str | None, str]:
    path = shutil.which("bwrap")
    if path is None:
        return None, "bubblewrap is not installed"
    probe = [path, "--unshare-all", "--unshare-user", "--die-with-parent", *_system_binds(), "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"bubblewrap ({path}) cannot start: {error}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return None, f"bubblewrap ({path}) cannot create a sandbox here: {why[0]}"
    return path, f"bubblewrap ({path})"


def sandbox_status() -> tuple[bool, str]:
    """(isolated, one sentence for the user about how commands are contained)."""
    path = _bwrap()
    procs = {
        "rlimit": "a process limit",
        "cgroup": "a process limit (pids cgroup)",
        "none": "no process limit (running as root without a writable pids cgroup)",
    }[process_limit_mode()]
    if path is not None:
        return True, (
            f"commands run in a bubblewrap sandbox ({path}): no network, read-only system files, "
            f"only the workspace writable, with CPU, memory, file-size and time limits and {procs}"
        )
    why = _probe_bwrap()[1] if shutil.which("bwrap") else "bubblewrap is not installed"
    return False, (
        f"{why}: commands run with CPU, memory, file-size and time limits and {procs} only, "
        "without file-system and network isolation; install it with `apt install bubblewrap`"
    )


def process_limit_mode() -> str:
    """How ``Limits.max_processes`` is enforced: "rlimit", "cgroup" or "none"."""
    if os.geteuid() != 0:
        return "rlimit"
    return "cgroup" if _pids_cgroup_base() is not None else "none"


# --------------------------------------------------------------------------- pids cgroup (root)


@functools.cache
def _pids_cgroup_base() -> Path | None:
    if os.geteuid() != 0:
        return None
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        parts = line.split()
        if len(parts) < 4:
            continue
        where, kind, options = Path(parts[1]), parts[2], parts[3].split(",")
        if kind == "cgroup" and "pids" in options:
            candidate = where
        elif kind == "cgroup2":
            try:
                enabled = (where / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "pids" not in enabled:
                continue
            candidate = where
        else:
            continue
        probe = candidate / f"smoltui-probe-{os.getpid()}"
        try:
            probe.mkdir()
            ok = (probe / "pids.max").exists()
            probe.rmdir()
        except OSError:
            continue
        if ok:
            return candidate
    return None


def _make_cgroup(max_processes: int) -> Path | None:
    base = _pids_cgroup_base()
    if base is None:
        return None
    for stale in base.glob("smoltui-sandbox-*"):  # left by a parent that was killed
        owner = stale.name.split("-")[2]
        if owner.isdigit() and int(owner) != os.getpid() and not Path(f"/proc/{owner}").exists():
            with contextlib.suppress(OSError):
                stale.rmdir()
    group = base / f"smoltui-sandbox-{os.getpid()}-{next(_counter)}"
    try:
        group.mkdir()
        (group / "pids.max").write_text(str(max_processes))
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


def _cgroup_pids(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


async def _drop_cgroup(group: Path) -> None:
    """Kill whatever is left in the run's cgroup, then remove it."""
    for _ in range(200):
        pids = _cgroup_pids(group)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.01)
    for _ in range(100):
        try:
            group.rmdir()
            return
        except OSError:
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- command line


def _user_tasks() -> int:
    """Tasks (threads included) the real user runs now: what RLIMIT_NPROC counts against."""
    uid, total = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1").strip() or 1)
    return total


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    for name in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                 "/etc/alternatives"):
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    return args


def _python_roots() -> list[str]:
    """Directories the running interpreter needs (a venv, a pyenv build under /root, ...)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    # A venv reached through a symlink (.venv -> a shared one) is run by its link path
    # (sys.executable), so the sandbox needs that path as well as the real one.
    roots = {os.path.realpath(r) for r in roots} | {os.path.abspath(r) for r in roots}
    kept = []
    for root in sorted(roots, key=len):
        if root in ("/", "/usr") or root.startswith("/usr/") or not os.path.isdir(root):
            continue
        if any(root.startswith(k + "/") for k in kept):
            continue
        kept.append(root)
    return kept


def _minimal_env(workspace: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workspace),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _bwrap_argv(bwrap: str, argv: Sequence[str], workspace: Path, limits: Limits,
                extra_ro: Sequence[Path]) -> list[str]:
    env = _minimal_env(workspace)
    args = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--disable-userns", "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += _system_binds()
    # The private /tmp comes first: binds made after it land on top of it, so an interpreter or a
    # workspace that lives under /tmp (a CI checkout, pytest's tmp_path) stays visible.
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.file_size_bytes), "--tmpfs", "/tmp"]
    for root in [*_python_roots(), *(os.path.realpath(p) for p in extra_ro)]:
        args += ["--ro-bind", root, root]
    args += ["--bind", str(workspace), str(workspace), "--chdir", str(workspace),
             "--remount-ro", "/", "--"]  # the sandbox's own root (where bwrap made /root, /work...)
    return args + list(argv)


def _preexec(limits: Limits, nproc: int | None, cgroup: Path | None, parent: int):  # noqa: ANN202
    def apply() -> None:  # runs in the child between fork and exec
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(137)
        for which, value in ((resource.RLIMIT_CPU, limits.cpu_s),
                             (resource.RLIMIT_AS, limits.memory_bytes),
                             (resource.RLIMIT_FSIZE, limits.file_size_bytes),
                             (resource.RLIMIT_NOFILE, limits.open_files),
                             (resource.RLIMIT_CORE, 0)):
            hard = value + 1 if which == resource.RLIMIT_CPU else value
            resource.setrlimit(which, (value, hard))
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        # Python ignores SIGPIPE/SIGXFSZ; restore the defaults for whatever we exec.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)

    return apply


# --------------------------------------------------------------------------- running


async def _drain(stream: asyncio.StreamReader, keep: int, out: dict[str, object]) -> None:
    kept, total = bytearray(), 0
    out["kept"], out["total"] = kept, 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
        out["total"] = total


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _finish(proc: asyncio.subprocess.Process, cgroup: Path | None, tasks: list[asyncio.Future]) -> None:
    _kill_group(proc.pid)
    if cgroup is not None:
        await _drop_cgroup(cgroup)
    for _ in range(500):  # the direct child is SIGKILLed: its status comes at once
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.01)
    _, pending = await asyncio.wait(tasks, timeout=2)
    for task in pending:  # a pipe still held open by something that escaped us
        task.cancel()
    if pending:
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()


async def run_sandboxed(
    argv: Sequence[str],
    *,
    workspace: Path,
    limits: Limits = Limits(),  # noqa: B008 - frozen dataclass
    stdin: str | None = None,
    extra_ro: Sequence[Path] = (),
) -> SandboxResult:
    """Run ``argv`` with ``limits``, inside bubblewrap when it works; never raises for the child's sake.

    ``argv[0]`` must be reachable inside the sandbox: something under ``/usr`` or the running Python.
    ``extra_ro`` adds host directories the command may read.
    """
    workspace = Path(workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    bwrap = _bwrap()
    cgroup = _make_cgroup(limits.max_processes) if os.geteuid() == 0 else None
    nproc = None if os.geteuid() == 0 else _user_tasks() + limits.max_processes
    command = _bwrap_argv(bwrap, argv, workspace, limits, extra_ro) if bwrap else list(argv)
    started = time.monotonic()
    timed_out = False
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workspace,
            env=_minimal_env(workspace),
            start_new_session=True,
            preexec_fn=_preexec(limits, nproc, cgroup, os.getpid()),
        )
    except BaseException:
        if cgroup is not None:
            await _drop_cgroup(cgroup)
        raise
    outputs: list[dict[str, object]] = [{}, {}]
    assert proc.stdout is not None and proc.stderr is not None
    readers = [asyncio.ensure_future(_drain(proc.stdout, limits.output_bytes, outputs[0])),
               asyncio.ensure_future(_drain(proc.stderr, limits.output_bytes, outputs[1]))]
    feeder = (asyncio.ensure_future(_feed(proc.stdin, stdin.encode()))
              if stdin is not None and proc.stdin is not None else None)
    try:
        # Not proc.wait(): before 3.12 it also waits for the pipes, which a leftover child may hold open.
        deadline = started + limits.wall_s
        while proc.returncode is None:
            if time.monotonic() >= deadline:
                timed_out = True
                break
            await asyncio.sleep(0.02)
    finally:
        # Whatever happened (exit, timeout, our caller cancelled us), nothing of the run survives it.
        await asyncio.shield(_finish(proc, cgroup, [*readers, *([feeder] if feeder else [])]))
    duration = time.monotonic() - started
    code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    signum: int | None = -code if code < 0 else None
    if bwrap and signum is None and 128 < code <= 128 + 64:
        # bwrap reports a child killed by signal N as exit status 128 + N.
        signum, code = code - 128, -(code - 128)
    texts, totals = [], []
    for out in outputs:
        kept = bytes(out.get("kept", b""))  # type: ignore[arg-type]
        totals.append(int(out.get("total", 0)))  # type: ignore[call-overload]
        texts.append(kept.decode("utf-8", errors="replace"))
    return SandboxResult(
        exit_code=code,
        stdout=texts[0],
        stderr=texts[1],
        truncated=any(total > limits.output_bytes for total in totals),
        timed_out=timed_out,
        killed_by_signal=signum,
        duration_s=duration,
        isolated=bwrap is not None,
        stdout_bytes=totals[0],
        stderr_bytes=totals[1],
    )
