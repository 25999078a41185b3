"""The REST API over a real server: chats and replies, workflows, tools, models, audit, and every
kind of bad request answered with a clear JSON error that changes nothing."""

from __future__ import annotations

import json

from server.conftest import REPLY, THINKING
from server.harness import EventReader, RunningServer, error_of

VALID_WORKFLOW = """\
workflow:
  id: listed
  name: Listed
  tasks:
    - id: hello
      type: tool_call
      tool: python
      inputs: {code: "print('hi')"}
"""


def test_health_answers_over_the_socket_without_a_token(server: RunningServer) -> None:
    with server.unix() as api:
        health = api.get("/health").json()
    assert health["status"] == "ok"
    assert health["transport"] == "unix"
    assert health["home"] == str(server.home)
    assert health["model"]["label"] == "scripted"


def test_a_message_posted_to_a_chat_is_answered_and_stored(server: RunningServer) -> None:
    with server.unix() as api:
        chat = api.post("/api/chats", json={"title": "greetings"})
        assert chat.status_code == 201
        session = chat.json()["id"]
        answer = api.post(f"/api/chats/{session}/messages", json={"text": "hello", "stream": False})
        assert answer.status_code == 200, answer.text
        outcome = answer.json()
        assert outcome["ok"] and outcome["reply"]["content"] == REPLY
        stored = api.get(f"/api/chats/{session}/messages").json()
    assert [(m["role"], m["content"]) for m in stored] == [("user", "hello"), ("assistant", REPLY)]


def test_a_streamed_reply_arrives_token_by_token_then_done(server: RunningServer) -> None:
    with server.unix() as api:
        session = api.post("/api/chats", json={"title": "streamed"}).json()["id"]
        with api.stream("POST", f"/api/chats/{session}/messages", json={"text": "think first", "think": True},
                        headers={"Accept": "text/event-stream"}) as response:
            reader = EventReader(response)
            done = reader.until(lambda e: e.kind == "done", "done event")
    tokens = "".join(e.data["text"] for e in reader.seen if e.kind == "token")
    thinking = "".join(e.data["text"] for e in reader.seen if e.kind == "thinking")
    assert tokens == REPLY and thinking == THINKING
    kinds = [e.kind for e in reader.seen]
    assert kinds[0] == "reply_started" and kinds[-2:] == ["reply_finished", "done"]
    assert done.data["ok"] and done.data["reply"]["thinking"] == THINKING
    ids = [e.id for e in reader.seen if e.id is not None]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_malformed_json_is_a_400_and_creates_nothing(server: RunningServer) -> None:
    with server.unix() as api:
        before = api.get("/api/chats").json()
        response = api.post("/api/chats", content=b'{"title": "half', headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        error = error_of(response)
        assert error["type"] == "malformed_json" and "not valid JSON" in error["message"]
        assert api.get("/api/chats").json() == before


def test_a_body_of_the_wrong_shape_is_a_422_naming_the_field(server: RunningServer) -> None:
    with server.unix() as api:
        session = api.post("/api/chats", json={"title": "shape"}).json()["id"]
        missing = api.post(f"/api/chats/{session}/messages", json={"think": True})
        wrong = api.post("/api/chats", json={"title": "x", "colour": "red"})
        empty = api.post(f"/api/chats/{session}/messages", json={"text": "/think"})
        assert api.get(f"/api/chats/{session}/messages").json() == []
    assert missing.status_code == 422 and "text" in error_of(missing)["message"]
    assert wrong.status_code == 422 and "colour" in error_of(wrong)["message"]
    assert empty.status_code == 422 and "nothing to send" in error_of(empty)["message"]


def test_unknown_ids_are_404s_with_a_message(server: RunningServer) -> None:
    with server.unix() as api:
        for method, path in [("GET", "/api/chats/999999"), ("POST", "/api/chats/999999/cancel"),
                             ("GET", "/api/runs/no-such-run"), ("POST", "/api/runs/no-such-run/cancel"),
                             ("POST", "/api/runs/no-such-run/resume"), ("GET", "/api/runs/no-such-run/logs"),
                             ("GET", "/api/approvals/no-such-call"), ("POST", "/api/approvals/no-such-call/approve"),
                             ("GET", "/api/workflows/no-such-workflow"), ("POST", "/api/tools/no_such_tool/call"),
                             ("GET", "/api/nothing-here")]:
            response = api.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 404, (method, path, response.text)
            assert error_of(response)["type"] == "not_found", (method, path)
        wrong_method = api.delete("/api/runs")
    assert wrong_method.status_code == 405 and error_of(wrong_method)["type"] == "method_not_allowed"


def test_posting_to_an_unknown_chat_changes_nothing(server: RunningServer) -> None:
    with server.unix() as api:
        before = api.get("/api/chats").json()
        response = api.post("/api/chats/424242/messages", json={"text": "anyone?"})
        assert response.status_code == 404 and "no chat session 424242" in error_of(response)["message"]
        assert api.get("/api/chats").json() == before


def test_a_body_over_the_cap_is_a_413_and_changes_nothing(server: RunningServer) -> None:
    with server.unix() as api:
        session = api.post("/api/chats", json={"title": "cap"}).json()["id"]
        huge = json.dumps({"text": "x" * (2 << 20)})
        declared = api.post(f"/api/chats/{session}/messages", content=huge,
                            headers={"Content-Type": "application/json"})

        def chunks():  # no Content-Length: the cap counts what actually arrives
            yield huge[: 1 << 19].encode()
            yield huge[1 << 19:].encode()

        streamed = api.post(f"/api/chats/{session}/messages", content=chunks(),
                            headers={"Content-Type": "application/json"})
        assert api.get(f"/api/chats/{session}/messages").json() == []
    for response in (declared, streamed):
        assert response.status_code == 413
        assert error_of(response)["type"] == "too_large" and "1 MiB" in error_of(response)["message"]


def test_workflows_are_listed_and_validated(server: RunningServer) -> None:
    (server.project / "workflows" / "listed.yaml").write_text(VALID_WORKFLOW, encoding="utf-8")
    with server.unix() as api:
        listed = api.get("/api/workflows").json()
        good = api.post("/api/workflows/validate", json={"text": VALID_WORKFLOW}).json()
        bad = api.post("/api/workflows/validate",
                       json={"text": VALID_WORKFLOW.replace("tool: python", "tool: no_such_tool")}).json()
        neither = api.post("/api/workflows/validate", json={})
    entry = next(w for w in listed["workflows"] if w["id"] == "listed")
    assert entry["valid"] and entry["folder"] == "project"
    assert good == {"valid": True, "problems": []}
    assert not bad["valid"] and "no_such_tool" in bad["problems"][0]["message"]
    assert neither.status_code == 422 and "either path or text" in error_of(neither)["message"]


def test_tools_models_and_audit_are_listed(server: RunningServer) -> None:
    with server.unix() as api:
        tools = {t["name"]: t for t in api.get("/api/tools").json()}
        models = api.get("/api/models").json()
        audit = api.get("/api/audit", params={"limit": 5})
    assert tools["python"]["risk"] == "execute" and tools["python"]["mode"] == "ask"
    assert models["model"]["ready"] and models["model"]["backend"] == "scripted"
    assert audit.status_code == 200 and isinstance(audit.json(), list)


def test_the_api_is_described_at_docs(server: RunningServer) -> None:
    with server.tcp() as anonymous:  # the description holds no data: no token needed
        spec = anonymous.get("/openapi.json")
        docs = anonymous.get("/docs")
    assert spec.status_code == 200 and docs.status_code == 200
    paths = spec.json()["paths"]
    assert {"/api/runs", "/api/approvals/{call_id}/approve", "/api/events", "/v1/chat/completions"} <= set(paths)
