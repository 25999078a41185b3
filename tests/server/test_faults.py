"""What goes wrong around a server: a client that goes away stops nothing; a server killed with
SIGKILL mid-run leaves the run interrupted, and the next server resumes it."""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

import httpx
from tui.harness import scripted

from server.harness import APPENDING_WORKFLOW, EventReader, RunningServer, events, smoltui, start_server
from smoltui.paths import Paths
from smoltui.server.client import SOCKET_BASE_URL, probe
from smoltui.server.locations import socket_path

CALL = '<tool_call>\n{"name": "python", "arguments": {"code": "print(6 * 7)"}}\n</tool_call>'
ANSWER = "The answer is 42."

def test_a_client_that_goes_away_does_not_stop_the_reply(runtime_dir: Path, tmp_path: Path) -> None:
    running: RunningServer = start_server(tmp_path, backend=scripted(CALL, ANSWER))
    try:
        with running.unix() as api:
            session = api.post("/api/chats", json={"title": "walk away", "tools": ["python"]}).json()["id"]
            with events(api, session_id=session, kinds="approval_needed,reply_finished,tool_call_done") as watch:
                with api.stream("POST", f"/api/chats/{session}/messages", json={"text": "six times seven?"},
                                headers={"Accept": "text/event-stream"}) as response:
                    reader = EventReader(response)
                    asked = reader.until(lambda e: e.kind == "approval_needed", "the approval request")
                # The client that sent the message is gone; the reply waits for its approval anyway.
                call_id = asked.data["request"]["call_id"]
                assert api.post(f"/api/approvals/{call_id}/approve", json={}).status_code == 200
                done = watch.until(lambda e: e.kind == "tool_call_done", "the tool call")
                finished = watch.until(lambda e: e.kind == "reply_finished" and not e.data["tool_calls"],
                                       "the final answer")
            messages = api.get(f"/api/chats/{session}/messages").json()
    finally:
        running.stop()
    assert done.data["ok"] and finished.data["content"] == ANSWER
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert "42" in messages[2]["content"] and messages[-1]["content"] == ANSWER


def test_a_run_of_a_killed_server_is_interrupted_and_the_next_server_resumes_it(
        env: dict[str, str], home: Path, tmp_path: Path) -> None:
    workflow = tmp_path / "killed.yaml"
    workflow.write_text(APPENDING_WORKFLOW.format(name="resumed"), encoding="utf-8")
    sock = socket_path(Paths.resolve(home))

    def api() -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url=SOCKET_BASE_URL, timeout=20)

    assert smoltui(env, "serve", "--detach", "--model", "scripted").returncode == 0
    with api() as client, events(client, kinds="approval_needed") as stream:
        run_id = client.post("/api/runs", json={"workflow": str(workflow)}).json()["id"]
        stream.until(lambda e: e.data["request"]["run_id"] == run_id, "the approval request")
        pid = client.get("/health").json()["pid"]
    gone = os.pidfd_open(pid)  # not our child (it was detached): a pidfd says when it has died
    os.kill(pid, signal.SIGKILL)
    assert select.select([gone], [], [], 30)[0], "the server did not die"
    os.close(gone)
    assert smoltui(env, "serve", "--detach", "--model", "scripted").returncode == 0  # the stale socket is replaced
    try:
        assert probe(sock) is not None
        with api() as client, events(client, kinds="approval_needed,run_finished") as stream:
            assert client.get(f"/api/runs/{run_id}").json()["state"] == "interrupted"
            resumed = client.post(f"/api/runs/{run_id}/resume", json={})
            assert resumed.status_code == 200, resumed.text
            asked = stream.until(lambda e: e.kind == "approval_needed", "the approval, asked again")
            client.post(f"/api/approvals/{asked.data['request']['call_id']}/approve", json={})
            finished = stream.until(lambda e: e.kind == "run_finished", "the resumed run's end")
    finally:
        smoltui(env, "serve", "stop")
    assert finished.data["state"] == "succeeded"
    assert (tmp_path / "resumed.txt").read_text() == "ran\n"
