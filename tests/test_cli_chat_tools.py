"""``smoltui chat --tools``: tools on the command line, approvals by ``--approve``, bad names refused."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_error, run


def test_unknown_tool_is_one_line_with_the_known_ones(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "chat", "--model", "scripted", "--tools", "read_file,nope", "-p", "hi")
    assert_one_line_error(result, 3, "--tools", "'nope'", "read_file")


def test_bad_step_limit_is_refused(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "chat", "--model", "scripted", "--tools", "read_file", "--max-steps", "0", "-p", "hi")
    assert_one_line_error(result, 2, "--max-steps: 0 is too small")


@pytest.mark.llama
def test_chat_with_tools_on_the_bundled_model(cli_env: dict[str, str], home: Path) -> None:
    result = run(cli_env, "chat", "--tools", "read_file,list_dir", "--approve", "read", "--max-tokens", "24",
                 "--json", "-p", "List the files here.", timeout=300)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert isinstance(payload["tool_calls"], list)
    with sqlite3.connect(home / "smoltui.db") as db:
        (tools,) = db.execute("select tools from sessions where id = ?", (payload["session_id"],)).fetchone()
        (think,) = db.execute("select json_extract(stats, '$.think') from messages where session_id = ? "
                              "and role = 'assistant' order by id limit 1", (payload["session_id"],)).fetchone()
    assert json.loads(tools) == ["list_dir", "read_file"]
    assert think == 0  # thinking is off for tool calling unless --think
