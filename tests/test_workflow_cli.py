"""The headless workflow commands as a user runs them: run, resume, runs, logs (real subprocesses)."""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import select
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON
from tests.fixtures.tally import Tally, install_tool_plugin
from tests.test_cli import SCRIPTED_REPLY_START, run, run_with_stdout_closed

PIPELINE = """\
workflow:
  id: notes-demo
  name: Notes demo
  variables:
    input_file: notes.txt
  tasks:
    - id: read
      type: tool_call
      tool: read_file
      inputs: {path: "${input_file}"}
      outputs: [text]
    - id: summarize
      type: llm_task
      depends_on: [read]
      prompt: "Summarize: ${text}"
      outputs: [summary]
    - id: save
      type: tool_call
      tool: write_file
      depends_on: [summarize]
      inputs: {path: out.md, content: "${summary}", overwrite: true}
"""

# First task: write_file without overwrite, so running it twice would fail the run.
SLOW = """\
workflow:
  id: slow-demo
  variables:
    sleep: 30
  tasks:
    - id: mark
      type: tool_call
      tool: write_file
      inputs: {path: marker.txt, content: "ran once\\n"}
    - id: slow
      type: tool_call
      tool: python
      depends_on: [mark]
      inputs: {code: "import time; time.sleep(${sleep}); print('done')", timeout_s: 120}
      outputs: [result]
"""


def _workflow_file(tmp_path: Path, name: str, text: str) -> Path:
    """``tmp_path/NAME/NAME.yaml`` holding ``text`` (the run's workspace is that folder)."""
    folder = tmp_path / name
    folder.mkdir()
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _pipeline(tmp_path: Path) -> Path:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "notes.txt").write_text("buy milk\ncall Ann\n", encoding="utf-8")
    path = folder / "pipeline.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    return path


def _runs(env: dict[str, str]) -> list[dict]:
    result = run(env, "runs", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_run_succeeds_and_shows_in_runs_and_logs(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = _pipeline(tmp_path)
    result = run(cli_env, "run", str(path), "--model", "scripted", "--approve", "write_file")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "read: succeeded" in result.stdout
    assert "save: succeeded" in result.stdout
    assert (path.parent / "out.md").read_text(encoding="utf-8").strip()  # the scripted reply

    [row] = _runs(cli_env)
    assert row["state"] == "succeeded"
    assert row["workflow"] == "notes-demo"
    assert (row["tasks_done"], row["tasks_total"]) == (3, 3)
    assert row["id"] in result.stdout

    table = run(cli_env, "runs")
    assert row["id"] in table.stdout and "3/3" in table.stdout

    logs = run(cli_env, "logs", row["id"])
    assert logs.returncode == 0, logs.stderr
    for task in ("read", "summarize", "save"):
        assert f"{task}: task_state: succeeded" in logs.stdout
    assert "run_state: succeeded" in logs.stdout
    followed = run(cli_env, "logs", row["id"], "--follow", timeout=30)  # a finished run: returns at once
    assert followed.returncode == 0 and followed.stdout == logs.stdout


ASK_AND_SAVE = """\
workflow:
  id: ask-and-save
  tasks:
    - id: ask
      type: llm_task
      prompt: "Say hello."
      outputs: [reply]
    - id: save
      type: tool_call
      tool: write_file
      depends_on: [ask]
      inputs: {path: reply.md, content: "${reply}", overwrite: true}
"""


def _ask_and_save(tmp_path: Path) -> Path:
    return _workflow_file(tmp_path, "ask", ASK_AND_SAVE)


def _stored_outputs(home: Path, run_id: str) -> dict[str, Any]:
    from smoltui.paths import Paths

    with sqlite3.connect(Paths.resolve(str(home)).database) as db:
        rows = db.execute("SELECT task_id, outputs FROM task_runs WHERE run_id = ?", (run_id,)).fetchall()
    return {task_id: json.loads(outputs) if outputs else None for task_id, outputs in rows}


def test_run_approve_all_with_a_scripted_llm_task_prints_its_result(cli_env: dict[str, str], home: Path,
                                                                    tmp_path: Path) -> None:
    path = _ask_and_save(tmp_path)
    result = run(cli_env, "run", str(path), "--model", "scripted", "--approve", "all")
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = _runs(cli_env)
    lines = result.stdout.splitlines()
    assert f"[{row['id']}] ask: succeeded" in lines and f"[{row['id']}] save: succeeded" in lines
    assert lines[-1] == f"run {row['id']} succeeded (2 succeeded)"
    # The scripted model's reply is the task's stored output, and what the next task wrote.
    assert _stored_outputs(home, row["id"])["ask"]["reply"].startswith(SCRIPTED_REPLY_START)
    assert (path.parent / "reply.md").read_text(encoding="utf-8").startswith(SCRIPTED_REPLY_START)


def test_a_run_whose_reader_went_away_goes_on_quietly(cli_env: dict[str, str], tmp_path: Path) -> None:
    """``smoltui run FILE | head -1``: the progress lines stop, the run (the work) does not."""
    path = _ask_and_save(tmp_path)
    result = run_with_stdout_closed(cli_env, "run", str(path), "--model", "scripted", "--approve", "all")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr, result.stderr
    [row] = _runs(cli_env)
    assert row["state"] == "succeeded"
    assert (path.parent / "reply.md").read_text(encoding="utf-8").startswith(SCRIPTED_REPLY_START)


def test_json_lines(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = _pipeline(tmp_path)
    result = run(cli_env, "run", str(path), "--model", "scripted", "--approve", "write_file", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"event": "run_state", "run_id": events[0]["run_id"], "state": "running"} == events[0]
    states = [(e["task_id"], e["state"]) for e in events if e["event"] == "task_state"]
    assert ("read", "succeeded") in states and ("save", "succeeded") in states
    assert events[-1]["event"] == "result" and events[-1]["state"] == "succeeded"


def test_invalid_workflow_exits_2_with_positions(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("workflow:\n  id: x\n  tasks:\n    - id: a\n      type: tool_call\n"
                    "      tool: reed_file\n      depends_on: [zz]\n", encoding="utf-8")
    result = run(cli_env, "run", str(path), "--model", "scripted")
    assert result.returncode == 2
    assert f"{path}:6:13: unknown tool `reed_file`" in result.stderr
    assert f"{path}:7:20:" in result.stderr
    assert "Traceback" not in result.stderr
    assert _runs(cli_env) == []  # nothing was started


def test_failing_task_exits_1_and_marks_dependents(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = _pipeline(tmp_path)
    result = run(cli_env, "run", str(path), "--model", "scripted", "--approve", "write_file",
                 "--var", "input_file=missing.txt")
    assert result.returncode == 1, result.stderr
    assert "read: failed" in result.stdout
    assert "summarize: upstream_failed" in result.stdout
    [row] = _runs(cli_env)
    assert row["state"] == "failed"
    assert row["task_states"] == {"read": "failed", "summarize": "upstream_failed", "save": "upstream_failed"}


def test_unknown_var_and_unknown_run(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = _pipeline(tmp_path)
    result = run(cli_env, "run", str(path), "--model", "scripted", "--var", "inptu_file=x")
    assert result.returncode == 2 and "did you mean `input_file`" in result.stderr
    assert run(cli_env, "resume", "no-such-run").returncode != 0
    assert run(cli_env, "logs", "no-such-run").returncode != 0


def _task_states(database: Path) -> dict[str, str]:
    if not database.exists():
        return {}
    try:
        with sqlite3.connect(database, timeout=5) as conn:
            return dict(conn.execute("SELECT task_id, state FROM task_runs").fetchall())
    except sqlite3.OperationalError:  # not migrated yet
        return {}


def _start_run_until(args: list[str], env: dict[str, str], database: Path, ready) -> subprocess.Popen:  # noqa: ANN001
    """Start `smoltui run ...` and return once ``ready(task_states)`` holds (the process still alive)."""
    proc = subprocess.Popen([PYTHON, "-m", "smoltui", "run", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    try:
        while not ready(_task_states(database)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, _task_states(database)
            time.sleep(0.1)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_sigkilled_run_resumes_without_rerunning_finished_tasks(
    cli_env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    from smoltui.paths import Paths

    path = _workflow_file(tmp_path, "slow", SLOW)
    database = Paths.resolve(str(home)).database
    proc = _start_run_until([str(path), "--approve", "write_file,python"], cli_env, database,
                            lambda states: states == {"mark": "succeeded", "slow": "running"})
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [row] = _runs(cli_env)
    assert row["state"] == "interrupted"  # stored as running, but its process is gone

    _resume_slow_run(cli_env, row["id"], path.parent)


def _resume_slow_run(cli_env: dict[str, str], run_id: str, folder: Path) -> None:
    """Resume the slow workflow's run (no sleep this time): its first task is not run again."""
    result = run(cli_env, "resume", run_id, "--approve", "write_file,python", "--var", "sleep=0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mark: running" not in result.stdout  # the finished task was not run again
    assert "slow: succeeded" in result.stdout
    assert result.stdout.splitlines()[-1] == f"run {run_id} succeeded (2 succeeded)"
    assert (folder / "marker.txt").read_text(encoding="utf-8").splitlines() == ["ran once"]
    [row] = _runs(cli_env)
    assert row["state"] == "succeeded"
    assert row["task_states"] == {"mark": "succeeded", "slow": "succeeded"}


def _cancel_slow_run(cli_env: dict[str, str], home: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """Start the slow workflow, press Ctrl+C while its second task runs: (its folder, stdout, stderr)."""
    from smoltui.paths import Paths

    path = _workflow_file(tmp_path, "slow", SLOW)
    database = Paths.resolve(str(home)).database
    proc = _start_run_until([str(path), "--approve", "write_file,python"], cli_env, database,
                            lambda states: states.get("slow") == "running")
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    return path.parent, out, err


def test_ctrl_c_cancels_the_run_and_exits_130(cli_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    _, out, _ = _cancel_slow_run(cli_env, home, tmp_path)
    assert "slow: cancelled" in out
    [row] = _runs(cli_env)
    assert row["state"] == "cancelled"
    assert row["task_states"]["slow"] == "cancelled"


def test_a_cancelled_run_resumes_without_rerunning_finished_tasks(
    cli_env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    from smoltui.paths import Paths

    folder, _, _ = _cancel_slow_run(cli_env, home, tmp_path)
    with sqlite3.connect(Paths.resolve(str(home)).database) as db:
        [(run_id, state)] = db.execute("SELECT id, state FROM runs").fetchall()
    assert state == "cancelled"
    _resume_slow_run(cli_env, run_id, folder)


@pytest.mark.llama
def test_structured_llm_output_on_the_bundled_model_feeds_later_tasks(cli_env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    workflow = tmp_path / "structured.yaml"
    workflow.write_text(
        """
workflow:
  id: structured
  tasks:
    - id: pick
      type: llm_task
      prompt: "Name a color and say whether it is warm."
      schema:
        type: object
        properties:
          color: {type: string, maxLength: 12}
          warm: {type: boolean}
        required: [color, warm]
        additionalProperties: false
      outputs: [answer]
    - id: save
      type: tool_call
      tool: write_file
      depends_on: [pick]
      inputs:
        path: color.txt
        content: "${answer.color} warm=${answer.warm}"
      outputs: [saved]
""",
        encoding="utf-8",
    )
    (Path(cli_env["SMOLTUI_HOME"]) / "config.toml").write_text("[chat]\nmax_tokens = 60\ntemperature = 0.0\n",
                                                               encoding="utf-8")
    result = subprocess.run(
        [PYTHON, "-m", "smoltui", "run", str(workflow), "--approve", "write_file", "--workspace", str(tmp_path)],
        env=cli_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    saved = (tmp_path / "color.txt").read_text(encoding="utf-8")
    color, warm = saved.rsplit(" warm=", 1)
    assert 0 < len(color) <= 12 and warm in ("True", "False")


LIVE = """\
workflow:
  id: live-demo
  tasks:
    - id: first
      type: tool_call
      tool: write_file
      inputs: {path: marker.txt, content: "x\\n", overwrite: true}
    - id: second
      type: tool_call
      tool: python
      depends_on: [first]
      inputs: {code: "import time; time.sleep(${sleep}); print('done')", timeout_s: 60}
  variables:
    sleep: 0.5
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _live_workflow(tmp_path: Path) -> Path:
    return _workflow_file(tmp_path, "live", LIVE)


def test_run_on_a_terminal_shows_a_live_table(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = _live_workflow(tmp_path)
    env = {**cli_env, "COLUMNS": "100", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [PYTHON, "-m", "smoltui", "run", str(path), "--approve", "write_file,python"],
        env=env, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    raw = b"".join(chunks).decode("utf-8", errors="replace")
    assert proc.returncode == 0, raw + proc.stderr.read().decode()
    final = ANSI.sub("", raw.rsplit("\x1b[2K", 1)[-1]).replace("\r", "")
    lines = final.splitlines()
    [row] = _runs(cli_env)
    assert lines[0].startswith(f"run {row['id']}") and "succeeded" in lines[0] and "2/2 done" in lines[0], final
    assert lines[1].split()[:4] == ["TASK", "STATE", "TRY", "TIME"], final
    assert any(line.startswith("first ") and "succeeded" in line for line in lines), final
    assert any(line.startswith("second ") and "succeeded" in line for line in lines), final
    assert f"run {row['id']} succeeded (2 succeeded)" in lines[-1], final
    plain = ANSI.sub("", raw)
    assert f"[{row['id']}] first:" not in plain and f"[{row['id']}] run:" not in plain, plain


def test_logs_follow_streams_a_live_run_and_exits_when_it_ends(cli_env: dict[str, str], home: Path,
                                                               tmp_path: Path) -> None:
    # The run's second task holds until the test opens its gate, so `logs --follow` is shown to
    # stream a run that is still going however slowly the follower starts.
    tally = Tally(tmp_path, cli_env, home)
    proc = tally.smoltui("run", str(tally.workflow), "--approve", "tally")
    follower: subprocess.Popen | None = None
    try:
        deadline = time.monotonic() + 60
        while (run_id := tally.states()[0]) is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        follower = tally.smoltui("logs", run_id, "--follow")
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(stream: Any) -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, args=(follower.stdout,), daemon=True).start()
        seen: list[str] = []
        while not any("first: task_state: succeeded" in line for line in seen):
            line = lines.get(timeout=30)
            assert line is not None, "".join(seen)
            seen.append(line)
        assert proc.poll() is None and follower.poll() is None, "the run is held: both still going"
        tally.gate.touch()

        assert follower.wait(timeout=60) == 0, follower.stderr.read() if follower.stderr else ""
        while (line := lines.get(timeout=10)) is not None:
            seen.append(line)
        output = "".join(seen)
        assert proc.wait(timeout=30) == 0
        assert "third: task_state: succeeded" in output
        assert "run: run_state: succeeded" in output
    finally:
        for child in (proc, follower):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()


STUBBORN_PLUGIN = """
import os, time
from smoltui.tools.base import tool

@tool(risk="read")
def stubborn(seconds: float) -> str:
    '''Sleeps in a worker thread and ignores cancellation.

    Args:
        seconds: How long.
    '''
    open(os.environ["STUBBORN_STARTED"], "w").close()  # the test's cue: the tool is running now
    time.sleep(seconds)
    return "done"
"""


def test_a_second_ctrl_c_quits_at_once(cli_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    """A tool that ignores cancellation keeps a graceful exit waiting; the second Ctrl+C does not wait."""
    from smoltui.paths import Paths

    site = install_tool_plugin(tmp_path / "site", "stubborn", STUBBORN_PLUGIN)
    started_file = tmp_path / "stubborn-started"
    env = dict(cli_env, PYTHONPATH=f"{site}{os.pathsep}{cli_env['PYTHONPATH']}", STUBBORN_STARTED=str(started_file))
    path = tmp_path / "stubborn.yaml"
    path.write_text(
        "workflow:\n  id: stubborn\n  tasks:\n    - id: wait\n      type: tool_call\n      tool: stubborn\n"
        "      inputs: {seconds: 60}\n",
        encoding="utf-8",
    )
    database = Paths.resolve(str(home)).database
    started = time.monotonic()
    # The task's row says "running" a moment before the tool's thread starts: wait for the tool itself.
    proc = _start_run_until([str(path)], env, database, lambda states: started_file.exists())
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None, "the first Ctrl+C waits for the tool to let go"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "press Ctrl+C again to quit at once" in err and "interrupted" in err
    assert time.monotonic() - started < 45  # far less than the tool's 60 s
