"""`smoltui tools` and `smoltui audit` from the shell: the headless side of the approval gate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import PYTHON


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "smoltui", *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def audit(env: dict[str, str]) -> list[dict]:
    result = run(env, "audit", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_tools_list_names_risks_and_schemas(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "tools", "list", "--json")
    assert result.returncode == 0, result.stderr
    tools = {t["name"]: t for t in json.loads(result.stdout)}
    assert {"read_file", "write_file", "python", "sql_query", "web_fetch"} <= tools.keys()
    assert tools["python"]["risk"] == "execute" and tools["web_fetch"]["risk"] == "network"
    assert tools["read_file"]["parameters"]["required"] == ["path"]


def test_headless_runs_follow_the_policy_and_are_audited(cli_env: dict[str, str], tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("tea at five", encoding="utf-8")
    ws = ["--workspace", str(workspace)]

    read = run(cli_env, "tools", "run", "read_file", "--args", '{"path": "notes.txt"}', *ws, "--json")
    assert read.returncode == 0 and json.loads(read.stdout)["result"]["content"] == "tea at five"

    # Nobody to ask: a write is refused unless --approve allows it.
    denied = run(cli_env, "tools", "run", "write_file", "--args", '{"path": "out.txt", "content": "x"}', *ws)
    assert denied.returncode == 8 and "denied by policy (risk write)" in denied.stderr
    assert not (workspace / "out.txt").exists()
    allowed = run(cli_env, "tools", "run", "write_file", "--args", '{"path": "out.txt", "content": "x"}', *ws,
                  "--approve", "write_file")
    assert allowed.returncode == 0, allowed.stderr
    assert (workspace / "out.txt").read_text(encoding="utf-8") == "x"

    rows = audit(cli_env)
    assert [(r["tool"], r["decision"], r["decided_by"], r["ok"]) for r in reversed(rows)] == [
        ("read_file", "auto", "policy", True),
        ("write_file", "deny", "policy", False),
        ("write_file", "auto", "policy", True),
    ]


def test_bad_calls_are_one_line_errors(cli_env: dict[str, str], tmp_path: Path) -> None:
    ws = ["--workspace", str(tmp_path)]
    unknown = run(cli_env, "tools", "run", "format_disk", *ws, "--approve", "all")
    assert unknown.returncode == 8 and "no tool named 'format_disk'" in unknown.stderr
    wrong = run(cli_env, "tools", "run", "read_file", "--args", '{"path": 3}', *ws)
    assert wrong.returncode == 8 and "path: Input should be a valid string" in wrong.stderr
    not_json = run(cli_env, "tools", "run", "read_file", "--args", "{path", *ws)
    assert not_json.returncode == 1 and "--args is not valid JSON" in not_json.stderr
    typo = run(cli_env, "tools", "run", "read_file", "--approve", "raed_file", *ws)
    assert typo.returncode == 3 and "raed_file" in typo.stderr
    for result in (unknown, wrong, not_json, typo):
        assert "Traceback" not in result.stderr
