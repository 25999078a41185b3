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

The write budget (``Limits.write_bytes`` and ``Limits.write_files``) bounds everything one run may
write, all places together, and the kernel enforces it: a write past it fails with ``ENOSPC`` ("No
space left on device"). Where bubblewrap works and the kernel lets a user namespace mount overlayfs
(Linux 5.11 or later), a run has three layers:

* an outer bubblewrap that only makes a user and mount namespace (the host file system as it is) in
  which this module, run as a script (:func:`_budget_main`), mounts one tmpfs of ``write_bytes`` with
  ``write_files`` inodes, and an overlay whose lower layer is the workspace and whose upper layer
  lives on that tmpfs;
* the usual sandbox (inner bubblewrap) with the overlay as its workspace and directories of the same
  tmpfs as ``/tmp`` and ``/dev/shm``; ``/dev`` itself is read-only. So the workspace changes (a file
  changed is copied up whole), ``/tmp`` and ``/dev/shm`` all draw on the one budget;
* after the command ends (or is killed at the wall-clock limit), the helper copies the upper layer
  back into the workspace, without following a symbolic link (new and changed files, directories,
  links, deletions), and reports what was written.

Nothing of the host is written during the run, and at most the budget after it. :func:`write_budget_status`
says whether this applies. Where it does not (no bubblewrap, or no overlayfs in a user namespace),
``/tmp`` and ``/dev/shm`` are tmpfs of ``write_bytes`` each (with bubblewrap) and the workspace is
bounded only file by file: ``RLIMIT_FSIZE`` keeps each file under ``file_size_bytes``, and the number
of files is bounded by the wall-clock limit alone.

Without bubblewrap the command runs as the calling user with the limits only: it can read and write
whatever that user can and reach the network. :func:`sandbox_status` tells callers so they can say it
to the user once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __name__ != "__main__":  # the write-budget helper runs this file as a script: it starts faster without
    import asyncio

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
    file_size_bytes: int = 64 << 20  # RLIMIT_FSIZE: one file
    open_files: int = 256  # RLIMIT_NOFILE
    wall_s: float = 30.0  # then the whole process group / cgroup is killed
    output_bytes: int = 64 << 10  # kept per stream (stdout, stderr); the rest is counted
    write_bytes: int = 256 << 20  # the write budget: workspace changes, /tmp and /dev/shm together
    write_files: int = 10_000  # files and directories the run may create or change, all places together


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
    written_bytes: int | None = None  # workspace changes, /tmp and /dev/shm; None where there is no budget
    workspace_bytes: int | None = None  # the part of it that reached the workspace
    write_error: str | None = None  # the write budget was used up, or changes could not be kept


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


def _budget_works(workspace: Path | None = None) -> bool:
    """Whether the write budget can be enforced (for a workspace on this file system; the tests patch this)."""
    return _probe_budget(workspace)[0]


_budget_probes: dict[int | None, tuple[bool, str]] = {}  # file system (st_dev) -> answer


def _probe_budget(workspace: Path | None = None) -> tuple[bool, str]:
    """Run ``true`` the way :func:`run_sandboxed` runs a command under a write budget, once per file system.

    overlayfs takes some file systems as its lower layer and not others, so the probe uses the
    workspace itself (nothing is written to it) or, without one, a fresh temporary folder.
    """
    key = os.stat(workspace).st_dev if workspace is not None else None
    if key not in _budget_probes:
        _budget_probes[key] = _probe_budget_once(workspace)
    return _budget_probes[key]


def _probe_budget_once(workspace: Path | None) -> tuple[bool, str]:
    bwrap, true = _bwrap(), shutil.which("true") or "/usr/bin/true"
    if bwrap is None:
        return False, "bubblewrap does not work here"
    staging = _new_staging()
    try:
        if workspace is None:
            workspace = staging / "probe"
            workspace.mkdir()
        _write_job(staging, [true], workspace, Limits(write_bytes=1 << 20, write_files=64), ())
        try:
            done = subprocess.run(_outer_argv(bwrap, staging), capture_output=True, text=True, timeout=10,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return False, f"its tmpfs and overlay cannot be mounted here: {error}"
        status = _read_status(staging)
        if status.get("returncode") == 0:
            return True, "a write budget (tmpfs and overlayfs)"
        why = status.get("error") or (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return False, f"its tmpfs and overlay cannot be mounted here: {why}"
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_budget_status(workspace: Path | None = None) -> tuple[bool, str]:
    """(whether ``Limits.write_bytes`` bounds all a run in ``workspace`` writes, or only each file; why not)."""
    if _bwrap() is not None and _budget_works(workspace):
        return True, "every write of a run counts against its write budget"
    if _bwrap() is None:
        return False, "there is no total write budget without bubblewrap"
    return False, f"there is no total write budget: {_probe_budget(workspace)[1]}"


def sandbox_status() -> tuple[bool, str]:
    """(isolated, one sentence for the user about how commands are contained)."""
    path = _bwrap()
    procs = {
        "rlimit": "a process limit",
        "cgroup": "a process limit (pids cgroup)",
        "none": "no process limit (running as root without a writable pids cgroup)",
    }[process_limit_mode()]
    if path is not None:
        budget = ("a total write budget" if write_budget_status()[0]
                  else f"no total write budget ({_probe_budget()[1]}), only a size limit per file")
        return True, (
            f"commands run in a bubblewrap sandbox ({path}): no network, read-only system files, "
            f"only the workspace writable, with CPU, memory, file-size and time limits, {budget} and {procs}"
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
                extra_ro: Sequence[Path], staging: Path | None = None) -> list[str]:
    """The sandbox; with ``staging`` its writable places are on the run's budget tmpfs (see the docstring)."""
    env = _minimal_env(workspace)
    args = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--disable-userns", "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += _system_binds()
    # The private /tmp comes first: binds made after it land on top of it, so an interpreter or a
    # workspace that lives under /tmp (a CI checkout, pytest's tmp_path) stays visible.
    args += ["--proc", "/proc", "--dev", "/dev"]
    if staging is None:
        size = str(limits.write_bytes)
        args += ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm"]
        source = workspace
    else:
        args += ["--bind", str(staging / "budget" / "tmp"), "/tmp", "--bind", str(staging / "budget" / "shm"),
                 "/dev/shm"]
        source = staging / "merged"
    args += ["--remount-ro", "/dev"]  # only /dev itself: its device nodes and /dev/shm stay usable
    for root in [*_python_roots(), *(os.path.realpath(p) for p in extra_ro)]:
        args += ["--ro-bind", root, root]
    args += ["--bind", str(source), str(workspace), "--chdir", str(workspace),
             "--remount-ro", "/", "--"]  # the sandbox's own root (where bwrap made /root, /work...)
    return args + list(argv)


# --------------------------------------------------------------------------- write budget

_SPARE_INODES = 16  # room for the budget tmpfs's own directories (upper, work, tmp, shm, overlay's work/work)
_MS_REMOUNT = 32
_COPY_BACK_S = 5.0  # more wall time for the helper to copy the changes back, plus 1 s per 50 MB


def _new_staging() -> Path:
    """A private folder on the host for one budgeted run: job.json, status.json and two mount points."""
    base = Path(tempfile.gettempdir())
    for stale in base.glob("smoltui-run-*"):  # left by a parent that was killed
        owner = stale.name.split("-")[2]
        if owner.isdigit() and int(owner) != os.getpid() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"smoltui-run-{os.getpid()}-", dir=base))
    (staging / "budget").mkdir()
    (staging / "merged").mkdir()
    return staging


def _write_job(staging: Path, argv: Sequence[str], workspace: Path, limits: Limits,
               extra_ro: Sequence[Path]) -> None:
    bwrap = _bwrap()
    assert bwrap is not None
    job = {"workspace": str(workspace), "write_bytes": limits.write_bytes, "write_files": limits.write_files,
           "wall_s": limits.wall_s, "argv": _bwrap_argv(bwrap, argv, workspace, limits, extra_ro, staging)}
    (staging / "job.json").write_text(json.dumps(job))


def _outer_argv(bwrap: str, staging: Path) -> list[str]:
    """A user and mount namespace over the host's file system, where the helper may mount."""
    return [bwrap, "--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL", "--dev-bind", "/", "/",
            "--die-with-parent", "--", sys.executable, "-I", "-S", os.path.abspath(__file__), str(staging)]


def _read_status(staging: Path) -> dict:
    try:
        return json.loads((staging / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _mount(source: str, target: Path, kind: str, options: str, flags: int = 0) -> None:
    assert _LIBC is not None
    if _LIBC.mount(source.encode(), str(target).encode(), kind.encode(), flags, options.encode()) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mounting {kind} on {target}: {os.strerror(error)}")


def _overlay_path(path: Path) -> str:
    return str(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _budget_main(staging: Path) -> int:
    """The helper between the two bubblewraps: mount, run the sandbox, copy back, report in status.json."""
    job = json.loads((staging / "job.json").read_text())
    workspace, budget, status = Path(job["workspace"]), staging / "budget", {}
    try:
        _mount("tmpfs", budget, "tmpfs",
               f"size={job['write_bytes']},nr_inodes={job['write_files'] + _SPARE_INODES},mode=0755")
        for name in ("upper", "work", "tmp", "shm"):
            (budget / name).mkdir()
        _mount("overlay", staging / "merged", "overlay",
               f"lowerdir={_overlay_path(workspace)},upperdir={_overlay_path(budget / 'upper')},"
               f"workdir={_overlay_path(budget / 'work')},userxattr")
        files_before = _files_used(budget)  # then exactly write_files more for the run
        _mount("tmpfs", budget, "tmpfs", f"nr_inodes={job['write_files'] + files_before}", _MS_REMOUNT)
    except OSError as error:
        (staging / "status.json").write_text(json.dumps({"error": str(error.strerror or error)}))
        return 125
    child = subprocess.Popen(job["argv"])  # stdin, stdout and stderr: ours; --die-with-parent: dies with us
    # A caller that gives up (a workflow task's timeout) asks us to stop: the run ends, and what it
    # wrote until then still reaches the workspace, as it would without the budget.
    signal.signal(signal.SIGTERM, lambda *_: child.kill())
    (staging / "helper.pid").write_text(str(os.getpid()))
    try:
        status["returncode"] = child.wait(timeout=job["wall_s"])
    except subprocess.TimeoutExpired:
        child.kill()
        status["returncode"], status["timed_out"] = child.wait(), True
    usage = os.statvfs(budget)
    status["written_bytes"] = (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    status["written_files"] = _files_used(budget) - files_before
    status["bytes_full"], status["files_full"] = usage.f_bfree == 0, usage.f_ffree == 0
    try:
        status["workspace_bytes"] = sum(
            entry.stat(follow_symlinks=False).st_size for entry in _walk(budget / "upper")
            if entry.is_file(follow_symlinks=False))
        status["problems"] = _copy_back(budget / "upper", workspace)
    except OSError as error:  # the workspace went away, or is no longer a directory
        status["workspace_bytes"], status["problems"] = 0, [f"{workspace}: {error.strerror or error}"]
    (staging / "status.json").write_text(json.dumps(status))
    return 0


def _files_used(path: Path) -> int:
    usage = os.statvfs(path)
    return usage.f_files - usage.f_ffree


def _walk(path: Path):  # noqa: ANN202 - an iterator of os.DirEntry
    for entry in os.scandir(path):
        yield entry
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))


def _copy_back(upper: Path, workspace: Path) -> list[str]:
    """Apply overlayfs's upper layer to the workspace; never follows a link on the workspace side."""
    problems: list[str] = []
    root = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _copy_dir(upper, root, "", problems)
    finally:
        os.close(root)
    return problems


def _copy_dir(source: Path, into: int, where: str, problems: list[str]) -> None:
    with contextlib.suppress(OSError):
        if os.getxattr(source, "user.overlay.opaque") == b"y":  # a directory made anew: nothing old in it
            keep = set(os.listdir(source))
            for name in os.listdir(into):
                if name not in keep:
                    _remove(name, into)
    for entry in os.scandir(source):
        name = entry.name
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:  # a whiteout: deleted
                _remove(name, into)
            elif stat.S_ISDIR(info.st_mode):
                with contextlib.suppress(FileNotFoundError):
                    if not stat.S_ISDIR(os.stat(name, dir_fd=into, follow_symlinks=False).st_mode):
                        _remove(name, into)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=into)
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=into)
                try:
                    _copy_dir(Path(entry.path), child, f"{where}{name}/", problems)
                    os.chmod(child, stat.S_IMODE(info.st_mode) & 0o777)
                finally:
                    os.close(child)
            elif stat.S_ISREG(info.st_mode):
                _copy_file(Path(entry.path), info, name, into)
            elif stat.S_ISLNK(info.st_mode):
                _remove(name, into)
                os.symlink(os.readlink(entry.path), name, dir_fd=into)
            # Pipes and sockets are not kept; the sandbox cannot make device nodes.
        except OSError as error:
            problems.append(f"{where}{name}: {error.strerror or error}")


def _copy_file(source: Path, info: os.stat_result, name: str, into: int) -> None:
    temporary = f".{name[:200]}.smoltui-{os.urandom(4).hex()}"
    out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=into)
    try:
        with open(source, "rb") as data, os.fdopen(os.dup(out), "wb") as target:
            shutil.copyfileobj(data, target, 1 << 20)
        os.chmod(out, stat.S_IMODE(info.st_mode) & 0o777)
        os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.stat(name, dir_fd=into, follow_symlinks=False).st_mode):
                _remove(name, into)
        os.replace(temporary, name, src_dir_fd=into, dst_dir_fd=into)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=into)
        raise
    finally:
        os.close(out)


def _remove(name: str, into: int) -> None:
    try:
        kind = os.stat(name, dir_fd=into, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(kind):
        shutil.rmtree(name, dir_fd=into)
    else:
        os.unlink(name, dir_fd=into)


def _size(count: int) -> str:
    if count < 1 << 20:
        return f"{count / 1024:.0f} KB"
    return f"{count / (1 << 20):.1f}".removesuffix(".0") + " MB"


def _budget_error(status: dict, limits: Limits) -> str | None:
    """What the user and the model read when the budget was used up or changes could not be kept."""
    if "error" in status:
        return f"the sandbox could not set up the write budget: {status['error']}"
    if not status:
        return None
    written = (f"it wrote {_size(status['written_bytes'])} in {status['written_files']:,} files and directories "
               f"({_size(status['workspace_bytes'])} of it in the workspace)")
    problems = status.get("problems") or []
    if status.get("bytes_full"):
        why = f"used up its write budget of {_size(limits.write_bytes)}"
    elif status.get("files_full"):
        why = f"used up its write budget of {limits.write_files:,} files and directories"
    elif problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return f"some of what the code wrote could not be kept in the workspace: {shown}"
    else:
        return None
    return (f"the code {why} for one call (workspace changes, /tmp and /dev/shm together): {written}, "
            "and the sandbox refused the rest (No space left on device); what it wrote up to then stays "
            "in the workspace")


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


async def _stop_and_copy_back(proc: asyncio.subprocess.Process, staging: Path, grace: float) -> None:
    """Stop a budgeted run early, letting the helper copy what it wrote back (within ``grace``)."""
    try:
        helper = int((staging / "helper.pid").read_text())
    except (OSError, ValueError):
        return  # not started yet: nothing was written
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(helper, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.returncode is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _finish(proc: asyncio.subprocess.Process, cgroup: Path | None, tasks: list[asyncio.Future]) -> None:
    _kill_group(proc.pid)
    if cgroup is not None:
        await _drop_cgroup(cgroup)
    for _ in range(500):  # the direct child is SIGKILLed: its status comes at once
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.01)
    _, pending = await asyncio.wait(tasks, timeout=2) if tasks else (set(), set())
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
    # The first call for a file system probes (half a second or so): off the event loop.
    budgeted = bwrap is not None and await asyncio.to_thread(_budget_works, workspace)
    staging = _new_staging() if budgeted else None
    try:
        return await _run(argv, workspace, limits, stdin, extra_ro, bwrap, staging)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


async def _run(argv: Sequence[str], workspace: Path, limits: Limits, stdin: str | None, extra_ro: Sequence[Path],
               bwrap: str | None, staging: Path | None) -> SandboxResult:
    cgroup = _make_cgroup(limits.max_processes) if os.geteuid() == 0 else None
    nproc = None if os.geteuid() == 0 else _user_tasks() + limits.max_processes
    if bwrap is not None and staging is not None:
        _write_job(staging, argv, workspace, limits, extra_ro)
        command = _outer_argv(bwrap, staging)  # the helper enforces wall_s, then copies the changes back
        grace = _COPY_BACK_S + limits.write_bytes / 50e6
    else:
        command = _bwrap_argv(bwrap, argv, workspace, limits, extra_ro) if bwrap else list(argv)
        grace = 0.0
    started = time.monotonic()
    timed_out = False
    spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=workspace,
        env=_minimal_env(workspace),
        start_new_session=True,
        preexec_fn=_preexec(limits, nproc, cgroup, os.getpid()),
    ))
    try:
        # Shielded: a caller cancelled while the process is being started must not leave it
        # running unwatched (it would outlive the run, and the process exit would wait for it).
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            started_proc = await spawn
            await asyncio.shield(_finish(started_proc, cgroup, []))
        raise
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
        deadline = started + limits.wall_s + grace
        while proc.returncode is None:
            if time.monotonic() >= deadline:
                timed_out = True
                break
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        if staging is not None:
            await asyncio.shield(_stop_and_copy_back(proc, staging, grace))
        raise
    finally:
        # Whatever happened (exit, timeout, our caller cancelled us), nothing of the run survives it.
        await asyncio.shield(_finish(proc, cgroup, [*readers, *([feeder] if feeder else [])]))
    duration = time.monotonic() - started
    code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    status = _read_status(staging) if staging is not None else {}
    if "returncode" in status:  # the helper's report on the inner bubblewrap
        code, timed_out = status["returncode"], timed_out or bool(status.get("timed_out"))
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
        written_bytes=status.get("written_bytes"),
        workspace_bytes=status.get("workspace_bytes"),
        write_error=_budget_error(status, limits) if staging is not None else None,
    )


if __name__ == "__main__":  # the write-budget helper, run by _outer_argv with python -I -S
    sys.exit(_budget_main(Path(sys.argv[1])))
