"""The ``python`` tool: run a snippet of Python in the sandbox, inside the workspace.

Code that raises, exits non-zero, is killed or runs out of time is a *failed* call: the error says
which (the exception's type and message, the exit code, the signal) and keeps the end of what the
code printed, so a workflow task that ran it fails (and what depends on it does not run), and a
model in a chat reads that its code failed and why.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from smoltui.tools.base import ToolContext, ToolResult, tool
from smoltui.tools.sandbox import Limits, SandboxResult, run_sandboxed, sandbox_status, write_budget_status

MAX_TIMEOUT_S = 300.0
WRITE_BUDGET_BYTES = 256 << 20  # what one call may write: workspace changes, /tmp and /dev/shm together
_notice_given = False  # reduced isolation is said once per process, not once per call
TAIL_CHARS = 1500
"""Of each of stdout and stderr, the end a failure keeps (the traceback's last frames, the last prints)."""
_RAISED = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")


def _limits(timeout_s: float) -> Limits:
    wall = min(max(float(timeout_s), 0.5), MAX_TIMEOUT_S)
    return Limits(cpu_s=max(1, int(wall + 0.999)), wall_s=wall, write_bytes=WRITE_BUDGET_BYTES)


def _tell_once(ctx: ToolContext, workspace: Path) -> None:
    global _notice_given
    if _notice_given:
        return
    _notice_given = True
    isolated, detail = sandbox_status()
    if not isolated:
        why = detail.split(": commands run", 1)[0]
        hint = "; install it with `apt install bubblewrap`" if "not installed" in why else ""
        ctx.notice(f"{why}: Python code runs with resource limits only, without file-system and network "
                   f"isolation{hint}")
    elif not (budget := write_budget_status(workspace))[0]:
        ctx.notice(f"{budget[1]}: each file Python code writes is limited to "
                   f"{Limits().file_size_bytes >> 20} MB, but not what all of them add up to")


def _failure(result: SandboxResult, stderr: str, timeout_s: float) -> str | None:
    """Why the code failed, in one line (None: it ran to the end and exited 0)."""
    if result.timed_out:
        return f"the code timed out after {timeout_s:g}s and was stopped"
    if result.killed_by_signal is not None:
        try:
            name = signal.Signals(result.killed_by_signal).name
        except ValueError:
            name = f"signal {result.killed_by_signal}"
        why = {"SIGXCPU": " (its CPU time limit)", "SIGKILL": " (a limit, or out of memory)"}.get(name, "")
        return f"the code was killed by {name}{why}"
    if result.exit_code == 0:
        return None
    lines = stderr.rstrip().splitlines()
    if "Traceback (most recent call last):" in stderr and lines:
        raised = _RAISED.match(lines[-1].strip())
        if raised is not None:
            return f"the code raised {lines[-1].strip()}"[:500]
    return f"the code exited with code {result.exit_code}"


def _tail(label: str, text: str) -> str:
    text = text.rstrip()
    if not text:
        return ""
    if len(text) > TAIL_CHARS:
        text = f"… {text[-TAIL_CHARS:]}"
    return f"\n{label}:\n{text}"


@tool(risk="execute", timeout_s=MAX_TIMEOUT_S + 30)
async def python(code: str, timeout_s: float = 30, *, ctx: ToolContext) -> dict[str, Any] | ToolResult:
    """Run Python 3 code in a sandbox and return what it printed.

    The code runs as a script with the workspace as the current directory; files it writes there
    stay. There is no network, and CPU time, memory, processes, output and what it writes (256 MB
    in all, /tmp included) are limited. Use print() to show results.

    Args:
        code: The Python source to run.
        timeout_s: Wall-clock limit in seconds (at most 300).
    """
    workspace = ctx.workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    script = workspace / f".smoltui-python-{uuid.uuid4().hex[:12]}.py"
    script.write_text(code, encoding="utf-8")
    try:
        _tell_once(ctx, workspace)
        # -I: no PYTHON* variables, no user site, no script dir on sys.path; site stays on so the
        # venv's installed packages (read-only inside the sandbox) can be imported.
        result = await run_sandboxed([sys.executable, "-I", str(script)], workspace=workspace,
                                     limits=_limits(timeout_s))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(script)
    if result.write_error is not None:
        tail = result.stderr.replace(str(script), "<code>").strip().splitlines()[-1:]
        said = f" (exit code {result.exit_code}{': ' + tail[0][:300] if tail else ''})"
        return ToolResult.failure("failed", f"python: {result.write_error}{said}", result.duration_s)
    stderr = result.stderr.replace(str(script), "<code>")
    failed = _failure(result, stderr, _limits(timeout_s).wall_s)
    if failed is not None:
        kind = "timeout" if result.timed_out else "failed"
        return ToolResult.failure(kind, f"python: {failed}{_tail('stderr', stderr)}{_tail('stdout', result.stdout)}",
                                  result.duration_s)
    return {
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": stderr,
        "truncated": result.truncated,
        "timed_out": result.timed_out,
        "isolated": result.isolated,
    }


PYTHON_TOOLS = [python]
