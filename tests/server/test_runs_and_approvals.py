"""Workflow runs over the API, and approvals answered over it reaching the core's gate: a python
task waits for a person, runs exactly once when approved, never when denied; a second answer is
a 409 and changes nothing; the files of a run are the only files the API serves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.harness import APPENDING_WORKFLOW, RunningServer, error_of, events


def _workflow(server: RunningServer, name: str) -> Path:
    path = server.project / "workflows" / f"{name}.yaml"
    path.write_text(APPENDING_WORKFLOW.format(name=name), encoding="utf-8")
    return path


def test_an_approval_answered_over_the_api_runs_the_task_once(server: RunningServer) -> None:
    workflow = _workflow(server, "approved")
    written = server.workspace / "approved.txt"
    with server.unix() as api, events(api, kinds="approval_needed,run_finished") as stream:
        run = api.post("/api/runs", json={"workflow": str(workflow), "workspace": str(server.workspace)})
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        asked = stream.until(lambda e: e.kind == "approval_needed" and e.data["request"]["run_id"] == run_id,
                             "the approval request")
        call_id = asked.data["request"]["call_id"]
        assert asked.data["request"]["tool"] == "python" and asked.data["request"]["task_id"] == "write"
        assert [a["call_id"] for a in api.get("/api/approvals", params={"run_id": run_id}).json()] == [call_id]
        assert api.get(f"/api/runs/{run_id}").json()["approvals"][0]["call_id"] == call_id
        assert not written.exists()  # nothing runs while it waits

        with server.tcp() as anonymous:  # only the token holder answers approvals
            refused = anonymous.post(f"/api/approvals/{call_id}/approve", json={})
        assert refused.status_code == 401
        assert api.get(f"/api/approvals/{call_id}").status_code == 200  # still waiting

        answer = api.post(f"/api/approvals/{call_id}/approve", json={})
        assert answer.status_code == 200 and answer.json()["decision"] == "once"
        finished = stream.until(lambda e: e.kind == "run_finished" and e.data["run_id"] == run_id, "the run's end")
        assert finished.data["state"] == "succeeded"

        again = api.post(f"/api/approvals/{call_id}/deny", json={"reason": "changed my mind"})
        assert again.status_code == 409
        assert "already answered" in error_of(again)["message"]
        run_now = api.get(f"/api/runs/{run_id}").json()
        audit = api.get("/api/audit", params={"run_id": run_id}).json()
    assert written.read_text() == "ran\n"  # once, and the late deny changed nothing
    assert run_now["state"] == "succeeded" and run_now["tasks"][0]["state"] == "succeeded"
    assert [(row["tool"], row["decision"], row["decided_by"], row["ok"]) for row in audit] == \
        [("python", "once", "user", True)]


def test_a_call_denied_over_the_api_never_runs_and_the_reason_is_kept(server: RunningServer) -> None:
    workflow = _workflow(server, "denied")
    with server.unix() as api, events(api, kinds="approval_needed,run_finished") as stream:
        run_id = api.post("/api/runs", json={"workflow": str(workflow),
                                             "workspace": str(server.workspace)}).json()["id"]
        asked = stream.until(lambda e: e.kind == "approval_needed" and e.data["request"]["run_id"] == run_id,
                             "the approval request")
        call_id = asked.data["request"]["call_id"]
        denied = api.post(f"/api/approvals/{call_id}/deny", json={"reason": "not on a Friday"})
        assert denied.status_code == 200
        finished = stream.until(lambda e: e.kind == "run_finished" and e.data["run_id"] == run_id, "the run's end")
        task = api.get(f"/api/runs/{run_id}/tasks/write").json()
        logs = api.get(f"/api/runs/{run_id}/logs").json()
    assert finished.data["state"] == "failed"
    assert not (server.workspace / "denied.txt").exists()
    assert "not on a Friday" in task["error"]
    assert logs and all(line["run_id"] == run_id for line in logs)


def test_cancelling_a_run_that_is_not_running_is_a_409(server: RunningServer) -> None:
    workflow = _workflow(server, "finished")
    with server.unix() as api, events(api, kinds="approval_needed,run_finished") as stream:
        run_id = api.post("/api/runs", json={"workflow": str(workflow),
                                             "workspace": str(server.workspace)}).json()["id"]
        call_id = stream.until(lambda e: e.kind == "approval_needed", "the approval request").data["request"]["call_id"]
        cancel = api.post(f"/api/runs/{run_id}/cancel")
        assert cancel.status_code == 200 and cancel.json()["cancelled"]
        stream.until(lambda e: e.kind == "run_finished" and e.data["run_id"] == run_id, "the run's end")
        again = api.post(f"/api/runs/{run_id}/cancel")
        late = api.post(f"/api/approvals/{call_id}/approve", json={})
        state = api.get(f"/api/runs/{run_id}").json()["state"]
    assert again.status_code == 409 and "not running" in error_of(again)["message"]
    assert late.status_code == 409  # the cancelled call was settled: approving it now runs nothing
    assert state == "cancelled"
    assert not (server.workspace / "finished.txt").exists()


def test_launching_an_invalid_workflow_is_a_422_with_its_problems(server: RunningServer) -> None:
    broken = server.project / "workflows" / "broken.yaml"
    broken.write_text(APPENDING_WORKFLOW.format(name="broken").replace("tool: python", "tool: nope"), encoding="utf-8")
    with server.unix() as api:
        before = api.get("/api/runs").json()
        response = api.post("/api/runs", json={"workflow": str(broken)})
        missing = api.post("/api/runs", json={"workflow": str(server.project / "absent.yaml")})
        unknown_var = api.post("/api/runs", json={"workflow": str(_workflow(server, "vars")),
                                                  "variables": {"nope": 1}})
        after = api.get("/api/runs").json()
    error = error_of(response)
    assert response.status_code == 422 and error["type"] == "invalid_workflow"
    assert "nope" in error["message"] and response.json()["error"]["problems"]
    assert missing.status_code == 404
    assert unknown_var.status_code == 422 and "nope" in error_of(unknown_var)["message"]
    assert after == before  # no run was stored


# -- files -----------------------------------------------------------------------------------------


@pytest.fixture
def run_with_files(server: RunningServer) -> tuple[str, Path]:
    """A stored run whose folder holds one artifact, beside a secret file outside every run."""
    workflow = _workflow(server, "files")
    with server.unix() as api, events(api, kinds="approval_needed,run_finished") as stream:
        run_id = api.post("/api/runs", json={"workflow": str(workflow),
                                             "workspace": str(server.workspace)}).json()["id"]
        call_id = stream.until(lambda e: e.kind == "approval_needed", "the approval").data["request"]["call_id"]
        api.post(f"/api/approvals/{call_id}/approve", json={})
        stream.until(lambda e: e.kind == "run_finished" and e.data["run_id"] == run_id, "the run's end")
    folder = server.home / "runs" / run_id / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.bin").write_bytes(b"\x00\x01run output")
    secret = server.home / "secret.txt"
    secret.write_text("not for the API", encoding="utf-8")
    return run_id, secret


def test_a_file_in_the_run_folder_is_served(server: RunningServer, run_with_files: tuple[str, Path]) -> None:
    run_id, _ = run_with_files
    with server.unix() as api:
        relative = api.get(f"/api/runs/{run_id}/files", params={"path": "artifacts/table.bin"})
        absolute = api.get(f"/api/runs/{run_id}/files",
                           params={"path": str(server.home / "runs" / run_id / "artifacts" / "table.bin")})
        absent = api.get(f"/api/runs/{run_id}/files", params={"path": "artifacts/absent.bin"})
    assert relative.status_code == 200 and relative.content == b"\x00\x01run output"
    assert absolute.content == relative.content
    assert absent.status_code == 404


def test_no_path_reaches_a_file_outside_the_run_folder(server: RunningServer,
                                                       run_with_files: tuple[str, Path]) -> None:
    run_id, secret = run_with_files
    folder = server.home / "runs" / run_id
    (folder / "artifacts" / "link.txt").symlink_to(secret)
    os.symlink(server.home, folder / "home-link")
    with server.unix() as api:
        attempts = {
            "dot-dot": "../../secret.txt",
            "dot-dot inside": "artifacts/../../../secret.txt",
            "absolute": str(secret),
            "etc": "/etc/passwd",
            "symlink to a file": "artifacts/link.txt",
            "symlink to a folder": "home-link/secret.txt",
            "another run's folder": f"../{run_id}x/artifacts/table.bin",
            "the folder itself": ".",
        }
        answers = {name: api.get(f"/api/runs/{run_id}/files", params={"path": path})
                   for name, path in attempts.items()}
    for name, response in answers.items():
        assert response.status_code == 403, (name, response.status_code)
        assert b"not for the API" not in response.content, name
        assert error_of(response)["type"] == "forbidden"
