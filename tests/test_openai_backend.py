"""The OpenAI-compatible backend against a fake server on loopback that streams real SSE over HTTP/1.1.

The server is written with asyncio streams so a test decides byte by byte what the client gets:
chunked server-sent events, a JSON error, a connection cut in the middle of a chunk, silence.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from smoltui.backends.openai_compat import OpenAICompatBackend, OpenAISettings, to_openai_messages
from smoltui.errors import BackendError, ModelError, NetworkError

MODELS = {"object": "list", "data": [{"id": "smollm3", "object": "model"}]}
HELLO = [ChatMessage("user", "Hello?")]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What the fake server writes back for one request."""

    writer: asyncio.StreamWriter
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()

    async def sse(self, events: list[Any], *, delay: float = 0.0, end: str = "done") -> None:
        """Stream ``events`` (dicts become ``data: {json}``, strings are sent as raw SSE text).

        ``end``: "done" sends ``data: [DONE]`` and closes the chunked body properly; "close" ends the
        body properly without ``[DONE]``; "cut" drops the connection in the middle of the body.
        """
        self.writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        if end == "done":
            events = [*events, "data: [DONE]\n\n"]
        try:
            for event in events:
                text = event if isinstance(event, str) else f"data: {json.dumps(event)}\n\n"
                data = text.encode()
                self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await self.writer.drain()
                if delay:
                    await asyncio.sleep(delay)
            if end == "cut":
                self.writer.write(b'40\r\ndata: {"choi')  # half a chunk, then the connection is gone
                await self.writer.drain()
                self.writer.transport.abort()
                return
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.disconnected.set()


Handler = Callable[[Request, Reply], Awaitable[None]]


@dataclass
class FakeServer:
    url: str
    requests: list[Request]
    replies: list[Reply]


@asynccontextmanager
async def fake_server(
    chat: Handler | None = None, *, models: Any = MODELS, models_status: int = 200, api_key: str | None = None
) -> AsyncIterator[FakeServer]:
    requests: list[Request] = []
    replies: list[Reply] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, path, headers, body)
            requests.append(request)
            reply = Reply(writer)
            replies.append(reply)
            if api_key is not None and headers.get("authorization") != f"Bearer {api_key}":
                await reply.json(
                    401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}}
                )
            elif path == "/v1/models":
                await reply.json(models_status, models)
            elif path == "/v1/chat/completions" and chat is not None:
                await chat(request, reply)
            else:
                await reply.json(404, {"error": {"message": f"no route {path}"}})
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield FakeServer(f"http://127.0.0.1:{port}", requests, replies)
    finally:
        server.close()


def chunk(
    content: str | None = None,
    *,
    reasoning: str | None = None,
    tool_calls: list | None = None,
    finish: str | None = None,
) -> dict:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "smollm3",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage(prompt: int, completion: int, cached: int = 0) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def streaming(events: list[Any], **options: Any) -> Handler:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.sse(events, **options)

    return handler


async def collect(
    backend: OpenAICompatBackend,
    params: GenerationParams | None = None,
    messages: list[ChatMessage] = HELLO,
    cancel: CancelToken | None = None,
) -> list[StreamEvent]:
    return [e async for e in backend.stream(messages, params or GenerationParams(), cancel or CancelToken())]


@asynccontextmanager
async def loaded(url: str, **settings: Any) -> AsyncIterator[OpenAICompatBackend]:
    backend = OpenAICompatBackend(OpenAISettings(base_url=url, **settings))
    try:
        await backend.load()
        yield backend
    finally:
        await backend.close()


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_streams_text_and_reports_the_servers_usage() -> None:
    events = [
        chunk("Paris"),
        chunk(" is the"),
        chunk(" capital."),
        chunk(finish="stop"),
        usage(21, 4, cached=5),
    ]
    async with fake_server(streaming(events)) as server, loaded(server.url, model="smollm3") as backend:
        out = await collect(backend, GenerationParams(max_tokens=50, temperature=0.2, seed=7))
    assert text_of(out) == "Paris is the capital."
    assert isinstance(out[-1], Finished) and sum(isinstance(e, Finished) for e in out) == 1
    stats = out[-1].stats
    assert (stats.prompt_tokens, stats.completion_tokens, stats.cached_tokens) == (21, 4, 5)
    assert stats.stop_reason == "stop" and stats.context_used == 25 and stats.ttft_s > 0
    body = server.requests[-1].json()
    assert body["model"] == "smollm3" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (50, 0.2, 7)
    # SmolLM3's template reads the reasoning switch from the system message.
    assert body["messages"] == [
        {"role": "system", "content": "/no_think"},
        {"role": "user", "content": "Hello?"},
    ]


async def test_without_usage_the_stats_count_the_streamed_chunks() -> None:
    events = [chunk("a"), chunk("b"), chunk("c", finish="length")]
    async with fake_server(streaming(events)) as server, loaded(server.url) as backend:
        assert backend.model_name == "smollm3"  # no model configured: the first one the server lists
        out = await collect(backend)
    stats = out[-1].stats
    assert stats.completion_tokens == 3 and stats.stop_reason == "length" and stats.prompt_tokens > 0


async def test_reasoning_deltas_and_think_tags_become_thinking() -> None:
    events = [chunk(reasoning="Let me"), chunk(reasoning=" think."), chunk("42"), chunk(finish="stop")]
    async with fake_server(streaming(events)) as server, loaded(server.url) as backend:
        out = await collect(
            backend, GenerationParams(think=True), [ChatMessage("system", "Be brief."), *HELLO]
        )
        assert server.requests[-1].json()["messages"][0] == {"role": "system", "content": "Be brief.\n/think"}
    assert "".join(e.text for e in out if isinstance(e, ThinkingDelta)) == "Let me think."
    assert text_of(out) == "42"

    # A server that passes SmolLM3's raw text through: the <think> block arrives inside content.
    tagged = [chunk("<thi"), chunk("nk>\nhmm"), chunk("\n</think>\n"), chunk("Yes."), chunk(finish="stop")]
    async with fake_server(streaming(tagged)) as server, loaded(server.url) as backend:
        out = await collect(backend, GenerationParams(think=True))
    assert "".join(e.text for e in out if isinstance(e, ThinkingDelta)) == "hmm"
    assert text_of(out) == "Yes."


async def test_tool_calls_streamed_in_fragments_arrive_as_whole_calls() -> None:
    fragments = [
        chunk(
            tool_calls=[
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        ),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
        chunk(
            tool_calls=[
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ]
        ),
        chunk(finish="tool_calls"),
        usage(80, 20),
    ]
    async with fake_server(streaming(fragments)) as server, loaded(server.url) as backend:
        out = await collect(backend, GenerationParams(tools=[WEATHER_TOOL]))
    calls = [e for e in out if isinstance(e, ToolCallDelta)]
    assert calls == [
        ToolCallDelta("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCallDelta("call_b", "get_weather", '{"city": "Oslo"}'),
    ]
    # The first call is complete (and emitted) as soon as the second one starts.
    assert out.index(calls[0]) < out.index(calls[1])
    assert server.requests[-1].json()["tools"] == [WEATHER_TOOL]
    assert out[-1].stats.stop_reason == "stop" and out[-1].stats.completion_tokens == 20


def test_history_with_tool_calls_maps_to_openai_messages() -> None:
    call = ToolCallDelta("call_a", "get_weather", '{"city": "Paris"}')
    history = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", thinking="I should look it up.", tool_calls=(call,)),
        ChatMessage("tool", '{"temp": 21}'),  # the result does not know its id: paired by position
        ChatMessage("assistant", "21 °C."),
    ]
    assert to_openai_messages(history) == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_a"},
        {"role": "assistant", "content": "21 °C."},
    ]


async def test_json_schema_and_api_key_are_sent() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    events = [chunk('{"ok": true}'), chunk(finish="stop")]
    async with (
        fake_server(streaming(events), api_key="sk-test") as server,
        loaded(server.url + "/v1/", api_key="sk-test") as backend,
    ):
        out = await collect(backend, GenerationParams(json_schema=schema))
    assert text_of(out) == '{"ok": true}'
    assert all(r.headers["authorization"] == "Bearer sk-test" for r in server.requests)
    assert server.requests[-1].json()["response_format"]["json_schema"]["schema"] == schema


async def test_a_rejected_api_key_says_so() -> None:
    async with fake_server(api_key="right") as server:
        with pytest.raises(
            NetworkError, match=r"API key rejected by http://127\.0\.0\.1:\d+/v1 \(401: Invalid API key\)"
        ):
            async with loaded(server.url, api_key="wrong"):
                pass


async def test_an_unreachable_server_names_the_url() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        NetworkError, match=rf"server at http://127\.0\.0\.1:{port}/v1 is unreachable"
    ) as error:
        async with loaded(f"http://127.0.0.1:{port}"):
            pass
    assert error.value.exit_code == 7


async def test_a_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NetworkError, match=r"unreachable: timed out after 0\.3s"):
            async with loaded(f"http://127.0.0.1:{port}", timeout_s=0.3):
                pass
    finally:
        server.close()


async def test_a_model_the_server_does_not_serve_is_named() -> None:
    async with fake_server() as server:
        with pytest.raises(ModelError, match=r"does not serve the model 'smollm3-q8' \(it serves: smollm3\)"):
            async with loaded(server.url, model="smollm3-q8"):
                pass

    async def missing(request: Request, reply: Reply) -> None:
        await reply.json(404, {"error": {"message": "model 'gone' not found"}})

    async with fake_server(missing) as server, loaded(server.url) as backend:
        with pytest.raises(ModelError, match=r"has no model 'smollm3' \(404: model 'gone' not found\)"):
            await collect(backend)


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (
            429,
            {"error": {"message": "Too many requests, slow down"}},
            r"rate limiting requests \(429: Too many requests, slow down\)",
        ),
        (
            500,
            {"error": {"code": 500, "message": "the context is full"}},
            r"answered 500: the context is full",
        ),
        (503, {"detail": "Loading model"}, r"answered 503: Loading model"),
    ],
)
async def test_server_errors_quote_the_server(status: int, payload: dict, expected: str) -> None:
    async def failing(request: Request, reply: Reply) -> None:
        await reply.json(status, payload)

    async with fake_server(failing) as server, loaded(server.url) as backend:
        with pytest.raises(BackendError, match=expected) as error:
            await collect(backend)
    assert error.value.exit_code == 6


async def test_a_stream_cut_mid_reply_says_after_how_many_tokens() -> None:
    events = [chunk("one"), chunk(" two"), chunk(" three")]
    async with fake_server(streaming(events, end="cut")) as server, loaded(server.url) as backend:
        seen: list[StreamEvent] = []
        with pytest.raises(BackendError, match="the server closed the stream after 3 tokens"):
            async for event in backend.stream(HELLO, GenerationParams(), CancelToken()):
                seen.append(event)
    assert text_of(seen) == "one two three"

    # A body that ends cleanly but before any finish reason or [DONE] is just as incomplete.
    async with fake_server(streaming(events[:1], end="close")) as server, loaded(server.url) as backend:
        with pytest.raises(BackendError, match="the server closed the stream after 1 tokens"):
            await collect(backend)


async def test_a_malformed_chunk_and_an_error_event_are_clear_errors() -> None:
    async with (
        fake_server(streaming([chunk("ok"), "data: {not json\n\n"])) as server,
        loaded(server.url) as backend,
    ):
        with pytest.raises(BackendError, match=r"malformed stream chunk: '\{not json'"):
            await collect(backend)
    error_event = 'data: {"error": {"message": "out of memory", "type": "server_error"}}\n\n'
    async with fake_server(streaming([chunk("ok"), error_event])) as server, loaded(server.url) as backend:
        with pytest.raises(BackendError, match="the server failed mid-reply: out of memory"):
            await collect(backend)


async def test_sse_comments_multiline_data_and_a_missing_done_are_fine() -> None:
    events = [
        ": keep-alive\n\n",
        "event: message\ndata: " + json.dumps(chunk("Hi")) + "\n\n",
        'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "!"}, "finish_reason": "stop"}]}\n\n',
    ]
    async with fake_server(streaming(events, end="close")) as server, loaded(server.url) as backend:
        out = await collect(backend)
    assert text_of(out) == "Hi!" and out[-1].stats.stop_reason == "stop"


async def test_cancelling_stops_the_reply_and_closes_the_stream() -> None:
    events = [chunk(f" w{i}") for i in range(200)]
    async with fake_server(streaming(events, delay=0.02)) as server, loaded(server.url) as backend:
        cancel = CancelToken()
        out: list[StreamEvent] = []
        async for event in backend.stream(HELLO, GenerationParams(), cancel):
            out.append(event)
            if len(out) == 3:
                cancel.cancel()
                cancelled_at = time.perf_counter()
        assert time.perf_counter() - cancelled_at < 0.5
        assert isinstance(out[-1], Finished) and out[-1].stats.stop_reason == "cancelled"
        assert len(out) < 10
        # The server notices: its writes fail once the client has closed the connection.
        await asyncio.wait_for(server.replies[-1].disconnected.wait(), 3)


async def test_a_consumer_that_stops_early_closes_the_connection() -> None:
    events = [chunk(f" w{i}") for i in range(200)]
    async with fake_server(streaming(events, delay=0.02)) as server, loaded(server.url) as backend:
        stream = backend.stream(HELLO, GenerationParams(), CancelToken())
        async for _ in stream:
            break
        await stream.aclose()
        await asyncio.wait_for(server.replies[-1].disconnected.wait(), 3)
