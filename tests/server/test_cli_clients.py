"""The command line as a client of ``smoltui serve``: real ``python -m smoltui`` processes against a
real server (uvicorn on its Unix socket, over a real core with the scripted backend) in a temporary
home. Each command prints what its in-process path (``--local``) prints for the same data; runs
started with ``--detach`` go on without the command; approvals wait for ``smoltui approve`` /
``deny``; ``show`` and the end of ``run`` print what a run made. With no server every command still
runs in-process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui.harness import scripted

from server.harness import APPENDING_WORKFLOW, RunningServer, one_line, smoltui, start_server
from smoltui.backends.scripted import ScriptedReply

REPO = Path(__file__).resolve().parents[2]
NOTE = "The **note** of the run."

MADE = """\
workflow:
  id: made
  name: Made things
  tasks:
    - id: table
      type: tool_call
      tool: load_data
      inputs: {path: "sales.csv"}
      outputs: [frame]
    - id: picture
      type: tool_call
      tool: chart
      depends_on: [table]
      inputs: {artifact: "${frame}", x: region, y: [sales]}
      outputs: [chart_path]
    - id: words
      type: llm_task
      prompt: "Write a short note."
      outputs: [note]
"""
"""A table (not final: the chart depends on it), a PNG file and a text: what ``show`` prints."""


@pytest.fixture(scope="module")
def served(runtime_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("clients"), backend=scripted(ScriptedReply(NOTE), delay_s=0.001))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def env(served: RunningServer, runtime_dir: Path) -> dict[str, str]:
    """A ``smoltui`` process of the served home: it finds the server's socket."""
    environment = dict(os.environ)
    environment.update(SMOLTUI_HOME=str(served.home), XDG_RUNTIME_DIR=str(runtime_dir), PYTHONPATH=str(REPO),
                       HF_HOME=str(served.home / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    environment.pop("SMOLTUI_LOCAL", None)
    return environment


@pytest.fixture(scope="module")
def made(served: RunningServer) -> Path:
    folder = served.project / "made"
    folder.mkdir()
    (folder / "sales.csv").write_text("region,sales\nnorth,3\nsouth,5\n")
    path = folder / "made.yaml"
    path.write_text(MADE)
    return path


@pytest.fixture(scope="module")
def finished_run(env: dict[str, str], made: Path) -> tuple[str, str]:
    """A run of MADE through the server: (its id, the command's stdout)."""
    result = smoltui(env, "run", str(made))
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.strip().splitlines()[-1].split()[1]
    return run_id, result.stdout


def both(env: dict[str, str], *args: str) -> tuple[object, object]:
    """(through the server, in-process) for the same command: stdout, stderr and the exit code."""
    served = smoltui(env, *args)
    local = smoltui(env, *args, "--local", "--model", "scripted")
    return ((served.returncode, served.stdout, served.stderr), (local.returncode, local.stdout, local.stderr))


def test_run_through_the_server_ends_with_its_final_tasks_outputs(finished_run: tuple[str, str]) -> None:
    run_id, stdout = finished_run
    lines = stdout.splitlines()
    assert lines[-1] == f"run {run_id} succeeded (3 succeeded)"  # the summary stays the last line
    assert "picture.chart_path" in stdout and ".png" in stdout
    assert "words.note" in stdout and NOTE in stdout  # piped: the text as written
    assert "table.frame" not in stdout  # the chart depends on it: not a final task


def test_show_prints_text_tables_and_artifacts_as_in_process(env: dict[str, str], finished_run: tuple[str, str]) -> None:
    run_id, _ = finished_run
    through_server, in_process = both(env, "show", run_id)
    assert through_server == in_process
    code, stdout, _ = through_server
    assert code == 0
    assert "table.frame" in stdout and "north" in stdout and "2 rows × 2 columns" in stdout
    assert ".parquet" in stdout and ".png" in stdout and NOTE in stdout
    one = smoltui(env, "show", run_id, "words")
    assert one.returncode == 0 and NOTE in one.stdout and "table.frame" not in one.stdout
    unknown_served, unknown_local = both(env, "show", run_id, "nope")
    assert unknown_served == unknown_local and unknown_served[0] == 1
    missing = smoltui(env, "show", "no-such-run")
    assert missing.returncode == 1 and one_line(missing) == "smoltui: no workflow run no-such-run"


@pytest.mark.parametrize("command", [
    ("runs",), ("runs", "--json"), ("logs", "{run}"), ("logs", "{run}", "--json"), ("logs", "-f", "{run}"),
    ("audit",), ("audit", "--json"), ("tools", "list"), ("validate", "{file}"), ("validate", "{file}", "--json"),
])
def test_each_command_prints_what_it_prints_in_process(env: dict[str, str], finished_run: tuple[str, str],
                                                        made: Path, command: tuple[str, ...]) -> None:
    args = [part.format(run=finished_run[0], file=made) for part in command]
    through_server, in_process = both(env, *args)
    assert through_server == in_process
    assert through_server[0] == 0 and through_server[1]


def test_a_detached_run_goes_on_and_its_approval_waits_for_approve(env: dict[str, str], served: RunningServer) -> None:
    path = served.project / "workflows" / "approve-me.yaml"
    path.write_text(APPENDING_WORKFLOW.format(name="approve-me"))
    started = smoltui(env, "run", "--detach", str(path), "--workspace", str(served.workspace))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    assert run_id and "\n" not in run_id
    call_id = _waiting_call(env, run_id)
    listed = smoltui(env, "approvals")
    assert listed.returncode == 0 and call_id in listed.stdout and "python" in listed.stdout
    assert f"run {run_id}/write" in listed.stdout
    approved = smoltui(env, "approve", call_id)
    assert approved.returncode == 0 and approved.stdout.strip() == f"{call_id}: approved"
    followed = smoltui(env, "logs", "--follow", run_id)  # returns once the run has ended
    assert followed.returncode == 0 and "run_state: succeeded" in followed.stdout
    assert (served.workspace / "approve-me.txt").read_text() == "ran\n"  # it ran once
    again = smoltui(env, "approve", call_id)
    assert again.returncode == 1 and "already answered" in one_line(again)


def test_deny_with_a_reason_stores_it_and_the_task_never_runs(env: dict[str, str], served: RunningServer) -> None:
    path = served.project / "workflows" / "deny-me.yaml"
    path.write_text(APPENDING_WORKFLOW.format(name="deny-me"))
    run_id = smoltui(env, "run", "-d", str(path), "--workspace", str(served.workspace)).stdout.strip()
    call_id = _waiting_call(env, run_id)
    denied = smoltui(env, "deny", call_id, "--reason", "not on a Friday")
    assert denied.returncode == 0 and denied.stdout.strip() == f"{call_id}: denied: not on a Friday"
    smoltui(env, "logs", "-f", run_id)
    rows = json.loads(smoltui(env, "audit", "--json", "--run", run_id).stdout)
    assert [row["decision"] for row in rows] == ["deny"]
    assert "not on a Friday" in json.dumps(rows)
    assert not (served.workspace / "deny-me.txt").exists()


def test_run_approve_flag_is_answered_by_the_server(env: dict[str, str], served: RunningServer) -> None:
    path = served.project / "workflows" / "flag.yaml"
    path.write_text(APPENDING_WORKFLOW.format(name="flag"))
    result = smoltui(env, "run", str(path), "--workspace", str(served.workspace), "--approve", "python")
    assert result.returncode == 0, result.stderr
    assert (served.workspace / "flag.txt").read_text() == "ran\n"
    refused = smoltui(env, "run", str(path), "--workspace", str(served.workspace), "--approve", "read")
    assert refused.returncode == 1 and "does not allow python" in refused.stderr
    assert (served.workspace / "flag.txt").read_text() == "ran\n"


def _waiting_call(env: dict[str, str], run_id: str) -> str:
    """The call the run waits on: ``logs -f`` would block, so ask ``approvals --json`` until it is
    there (the run asks within its first moments; each ask is a real process, not a sleep)."""
    for _ in range(200):
        waiting = json.loads(smoltui(env, "approvals", "--json", "--run", run_id).stdout)
        if waiting:
            return waiting[0]["call_id"]
    raise AssertionError(f"run {run_id} never asked for approval")


def test_without_a_server_approvals_says_so_and_commands_run_in_process(cli_env: dict[str, str], tmp_path: Path) -> None:
    listed = smoltui(cli_env, "approvals")
    assert listed.returncode == 0 and "no server runs for this home" in listed.stdout
    answer = smoltui(cli_env, "approve", "abc")
    assert answer.returncode == 1 and "needs `smoltui serve`" in one_line(answer)
    detached = smoltui(cli_env, "run", "--detach", "x.yaml")
    assert detached.returncode == 1 and one_line(detached).startswith("smoltui: --detach needs `smoltui serve`")
    (tmp_path / "sales.csv").write_text("region,sales\nnorth,3\n")
    (tmp_path / "made.yaml").write_text(MADE)
    ran = smoltui(cli_env, "run", str(tmp_path / "made.yaml"), "--model", "scripted")
    assert ran.returncode == 0, ran.stderr
    assert "picture.chart_path" in ran.stdout and "words.note" in ran.stdout  # in-process, the same ending
    run_id = ran.stdout.strip().splitlines()[-1].split()[1]
    shown = smoltui(cli_env, "show", run_id)
    assert shown.returncode == 0 and "north" in shown.stdout


def test_chat_streams_the_servers_reply_with_the_same_json_shape(env: dict[str, str]) -> None:
    plain = smoltui(env, "chat", "-p", "hello")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == NOTE + "\n"  # the server's model answered (its scripted note)
    served = json.loads(smoltui(env, "chat", "-p", "hello", "--json").stdout)
    local = json.loads(smoltui(env, "chat", "-p", "hello", "--json", "--local", "--model", "scripted").stdout)
    assert set(served) == set(local) and set(served["stats"]) == set(local["stats"])
    assert served["reply"] == NOTE and served["session_id"] != local["session_id"]
    refused = smoltui(env, "chat", "-p", "hello", "--system", "be brief")
    assert refused.returncode == 1 and "add --local" in one_line(refused)


def test_plan_drafts_with_the_servers_model(env: dict[str, str]) -> None:
    served = smoltui(env, "plan", "count the words", "--no-save")
    local = smoltui(env, "plan", "count the words", "--no-save", "--local", "--model", "scripted")
    # The scripted note is no JSON workflow: both say so the same way, and exit 2.
    assert (served.returncode, served.stderr) == (local.returncode, local.stderr)
    assert served.returncode == 2 and "not a JSON workflow" in served.stderr
    assert served.stdout.strip() == NOTE
