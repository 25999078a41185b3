"""The typed client phase B's commands use: over the socket, every resource; following events
across a server restart, saying it reconnects and resuming (with a gap event: a new server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tui.harness import scripted

from server.conftest import REPLY
from server.harness import APPENDING_WORKFLOW, RunningServer, start_server
from smoltui.paths import Paths
from smoltui.server.client import ServerClient, ServerEvent, ServerUnavailable
from smoltui.server.errors import ApiError


async def test_the_client_finds_the_homes_server_and_drives_it(server: RunningServer) -> None:
    client = ServerClient.for_home(Paths.resolve(server.home))
    assert client is not None
    async with client:
        assert (await client.health())["home"] == str(server.home)
        chat = await client.create_chat("from the client")
        streamed = [event async for event in client.send(chat["id"], "hello")]
        assert streamed[-1].kind == "done" and streamed[-1].data["reply"]["content"] == REPLY
        assert "".join(e.data["text"] for e in streamed if e.kind == "token") == REPLY
        waited = await client.send_and_wait(chat["id"], "again")
        assert waited["ok"] and [m["role"] for m in await client.messages(chat["id"])] == ["user", "assistant"] * 2

        workflow = server.project / "workflows" / "client.yaml"
        workflow.write_text(APPENDING_WORKFLOW.format(name="client"), encoding="utf-8")
        assert (await client.validate(path=workflow))["valid"]
        opened = asyncio.Event()
        follow = client.events(kinds=["approval_needed", "run_finished"], on_state=lambda state, _: opened.set())
        first = asyncio.ensure_future(anext(follow))
        await opened.wait()  # from now on every event is in the stream
        run = await client.launch(workflow, workspace=server.workspace)
        asked = await first
        assert asked.kind == "approval_needed" and asked.data["request"]["run_id"] == run["id"]
        assert [a["call_id"] for a in await client.approvals(run_id=run["id"])] == [asked.data["request"]["call_id"]]
        await client.approve(asked.data["request"]["call_id"])
        finished = await anext(follow)
        await follow.aclose()
        assert finished.kind == "run_finished" and finished.data["state"] == "succeeded"
        assert (await client.run(run["id"]))["tasks"][0]["state"] == "succeeded"
        with pytest.raises(ApiError) as refused:
            await client.approve(asked.data["request"]["call_id"])
        assert refused.value.status == 409 and "already answered" in str(refused.value)
        with pytest.raises(ApiError) as unknown:
            await client.run("no-such-run")
        assert unknown.value.status == 404 and unknown.value.type == "not_found"
    assert (server.workspace / "client.txt").read_text() == "ran\n"


def test_no_client_when_no_server_runs(tmp_path: Path, runtime_dir: Path) -> None:
    assert ServerClient.for_home(Paths.resolve(tmp_path / "nobody")) is None


async def test_a_follower_reconnects_with_backoff_and_resumes_after_a_restart(runtime_dir: Path,
                                                                              tmp_path: Path) -> None:
    running = await asyncio.to_thread(start_server, tmp_path, backend=scripted("first life"))
    states: list[tuple[str, float]] = []
    reconnecting = asyncio.Event()
    connected = asyncio.Event()

    def on_state(state: str, delay: float) -> None:
        states.append((state, delay))
        (reconnecting if state == "reconnecting" else connected).set()

    client = ServerClient.for_home(Paths.resolve(running.home))
    assert client is not None
    async with client:
        chat = await client.create_chat("restart")
        follow = client.events(kinds=["reply_finished", "gap"], on_state=on_state, max_backoff_s=0.2)
        first = asyncio.ensure_future(anext(follow))
        await connected.wait()
        await client.send_and_wait(chat["id"], "before")
        before: ServerEvent = await first
        assert before.data["content"] == "first life"

        nxt = asyncio.ensure_future(anext(follow))
        connected.clear()
        await asyncio.to_thread(running.stop)
        await reconnecting.wait()
        with pytest.raises(ServerUnavailable):
            await client.health()
        again = await asyncio.to_thread(start_server, tmp_path, backend=scripted("second life"))
        try:
            gap = await nxt  # the new server never had the old ids: fetch the state again
            await connected.wait()
            after_task = asyncio.ensure_future(anext(follow))
            await client.send_and_wait(chat["id"], "after")
            after = await after_task
            await follow.aclose()
        finally:
            await asyncio.to_thread(again.stop)
    assert gap.kind == "gap"
    assert after.kind == "reply_finished" and after.data["content"] == "second life"
    assert [state for state, _ in states][:2] == ["connected", "reconnecting"] and states[-1] == ("connected", 0.0)
    delays = [delay for state, delay in states if state == "reconnecting"]
    assert delays == sorted(delays) and all(d <= 0.2 for d in delays)  # backing off, capped
