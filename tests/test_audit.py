"""The audit trail: secrets never reach the disk, rows can be listed, the CLI shows them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from smoltui.orchestrator.approval import ToolCall
from smoltui.orchestrator.audit import REDACTED, AuditLog, is_secret_key, redact
from smoltui.orchestrator.store import Store
from smoltui.tools.base import ToolResult
from tests.conftest import PYTHON


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "smoltui", *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest_asyncio.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    store = await Store.open(tmp_path / "smoltui.db")
    yield AuditLog(store)
    await store.close()


@pytest.mark.parametrize("key", ["password", "PASSWD", "client_secret", "token", "access_token",
                                 "api_key", "X-Api-Key", "apiKey", "Authorization", "auth",
                                 "auth_header", "cookie", "Set-Cookie", "private_key", "aws_access_key_id",
                                 "sessionToken"])
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["path", "max_tokens", "author", "command", "keyword", "url", "tokens"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


async def test_redaction_is_nested_and_written_to_disk(audit: AuditLog, tmp_path: Path) -> None:
    arguments = {
        "url": "https://example.org",
        "headers": {"Authorization": "Bearer abc123", "Accept": "text/html"},
        "accounts": [{"user": "ann", "password": "hunter2"}, {"user": "bob", "api_key": {"k": "sk-1"}}],
        "max_tokens": 5,
    }
    call = ToolCall.new("fetch", arguments, run_id="r1")
    await audit.record(call, decision="auto", decided_by="policy", result=ToolResult(ok=True, content="fine"),
                       duration_s=0.5)
    [row] = await audit.list()
    assert row.arguments == {
        "url": "https://example.org",
        "headers": {"Authorization": REDACTED, "Accept": "text/html"},
        "accounts": [{"user": "ann", "password": REDACTED}, {"user": "bob", "api_key": REDACTED}],
        "max_tokens": 5,
    }
    assert call.arguments["headers"]["Authorization"] == "Bearer abc123"  # the caller's copy is untouched
    raw = sqlite3.connect(tmp_path / "smoltui.db").execute("SELECT arguments FROM tool_calls").fetchone()[0]
    assert "hunter2" not in raw and "abc123" not in raw and "sk-1" not in raw
    assert redact([{"token": 1}, "plain"]) == [{"token": REDACTED}, "plain"]


async def test_record_fields_and_listing_by_run_and_session(audit: AuditLog) -> None:
    a = await audit.record(ToolCall.new("look", {"path": "a"}, session_id=1), decision="auto",
                           decided_by="policy", result=ToolResult(ok=True, content=[1, 2]), duration_s=0.1,
                           started_at=1000.0)
    b = await audit.record(ToolCall.new("shell", {"command": "ls"}, run_id="run-9", task_id="t1"),
                           decision="deny", decided_by="user",
                           result=ToolResult.failure("denied", "shell was denied by the user"), duration_s=0.0)
    c = await audit.record(ToolCall.new("look", {"path": "c"}, session_id=2), decision="once", decided_by="user",
                           result=None, duration_s=None)
    await audit.complete(c, ToolResult(ok=True, content="x", duration_s=0.25))

    assert [r.id for r in await audit.list()] == [c, b, a]  # newest first
    assert [r.id for r in await audit.list(session_id=1)] == [a]
    assert [r.id for r in await audit.list(run_id="run-9")] == [b]
    assert [r.id for r in await audit.list(limit=1)] == [c]
    [first], [second], [third] = (await audit.list(session_id=1), await audit.list(run_id="run-9"),
                                  await audit.list(session_id=2))
    assert (first.created_at, first.ok, first.result_summary, first.duration_s) == (1000.0, True, "[1, 2]", 0.1)
    assert (second.task_id, second.ok, second.error) == ("t1", False, "shell was denied by the user")
    assert second.result_summary == "error (denied): shell was denied by the user"
    assert (third.ok, third.duration_s, third.result_summary) == (True, 0.25, '"x"')


async def test_cli_audit_lists_rows(cli_env: dict[str, str], home: Path) -> None:
    async with await Store.open(home / "smoltui.db") as store:
        await AuditLog(store).record(
            ToolCall.new("write_note", {"text": "hi", "token": "s3cret"}, session_id=3),
            decision="once", decided_by="user", result=ToolResult(ok=True, content="written"), duration_s=0.2)
        await AuditLog(store).record(
            ToolCall.new("shell", {"command": "ls"}, run_id="nightly"),
            decision="deny", decided_by="policy",
            result=ToolResult.failure("denied", "shell was denied by policy (risk execute)"), duration_s=0.0)

    result = run(cli_env, "audit", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["tool"] for r in rows] == ["shell", "write_note"]
    assert rows[1]["arguments"] == {"text": "hi", "token": REDACTED}
    assert (rows[1]["decision"], rows[1]["decided_by"], rows[1]["session_id"]) == ("once", "user", 3)
    assert "s3cret" not in result.stdout

    filtered = json.loads(run(cli_env, "audit", "--json", "--run", "nightly").stdout)
    assert [r["tool"] for r in filtered] == ["shell"]
    assert json.loads(run(cli_env, "audit", "--json", "--session", "3", "--limit", "5").stdout)[0]["tool"] == "write_note"

    table = run(cli_env, "audit")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "WHEN", "TOOL", "DECISION", "BY"]
    assert "shell" in lines[1] and "policy" in lines[1] and "run nightly" in lines[1]
    assert "write_note" in lines[2] and "session 3" in lines[2]


def test_cli_audit_on_an_empty_home(cli_env: dict[str, str], home: Path) -> None:
    result = run(cli_env, "audit", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []
    assert run(cli_env, "audit").stdout.strip() == "no tool calls recorded"
    assert not (home / "smoltui.db").exists()


def test_bad_approve_value_is_a_one_line_error(cli_env: dict[str, str], home: Path) -> None:
    result = run(cli_env, "chat", "--model", "scripted", "--approve", "rm -rf", "--prompt", "hi")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smoltui: --approve: ")
    assert not (home / "smoltui.db").exists()  # refused before anything was opened
    ok = run(cli_env, "chat", "--model", "scripted", "--approve", "read", "--prompt", "hi")
    assert ok.returncode == 0, ok.stderr
