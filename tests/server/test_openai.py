"""The OpenAI-compatible endpoint with the real ``openai`` package as the client: models, completions
streamed and not, tools returned as tool_calls (never run by smoltui: no approval, no audit row),
thinking on and off; first on the scripted server, then on the bundled llama.cpp model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.conftest import REPLY, THINKING
from server.harness import RunningServer, start_server
from smoltui.config import Config

openai = pytest.importorskip("openai")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.token, max_retries=0, timeout=60)


def _socket_client(server: RunningServer) -> openai.OpenAI:
    transport = httpx.HTTPTransport(uds=str(server.socket))
    return openai.OpenAI(base_url="http://smoltui/v1", api_key="not-needed-on-the-socket", max_retries=0,
                         http_client=httpx.Client(transport=transport, timeout=60))


# -- on the scripted model: the wire format ----------------------------------------------------------


def test_models_lists_the_one_model(server: RunningServer) -> None:
    models = _client(server).models.list()
    assert [m.id for m in models.data] == ["scripted"]


def test_a_completion_thinking_off_and_on(server: RunningServer) -> None:
    client = _client(server)
    plain = client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}])
    thought = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}],
                                             extra_body={"think": True})
    effort = _socket_client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], reasoning_effort="high")
    assert plain.choices[0].message.content == REPLY and plain.choices[0].finish_reason == "stop"
    assert getattr(plain.choices[0].message, "reasoning_content", None) is None
    assert thought.choices[0].message.content == REPLY  # the reasoning never leaks into the answer
    assert thought.choices[0].message.model_extra["reasoning_content"] == THINKING
    assert effort.choices[0].message.model_extra["reasoning_content"] == THINKING
    assert plain.usage.completion_tokens > 0 and plain.usage.total_tokens > plain.usage.prompt_tokens


def test_a_streamed_completion_with_usage(server: RunningServer) -> None:
    stream = _client(server).chat.completions.create(
        model="scripted", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == REPLY and finishes == ["stop"]
    assert len(chunks) > 3 and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stop_sequences_cut_the_reply(server: RunningServer) -> None:
    client = _client(server)
    whole = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}],
                                           stop=["server"])
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], stop="server", stream=True) if c.choices)
    assert whole.choices[0].message.content == REPLY.split("server")[0] == streamed


def test_unsupported_requests_get_openai_shaped_errors(server: RunningServer) -> None:
    client = _client(server)
    with pytest.raises(openai.BadRequestError) as several:
        client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}], n=2)
    with pytest.raises(openai.BadRequestError) as image:
        client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert "one choice" in several.value.message and "image_url" in image.value.message


# -- on the bundled model ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llama_server(runtime_dir: Path, bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    pytest.importorskip("llama_cpp")
    config = Config()
    config.model.n_ctx = 2048
    config.model.threads = 2
    config.chat.max_tokens = 64
    config.chat.temperature = 0.0
    running = start_server(tmp_path_factory.mktemp("llama-served"), config=config, model_spec=str(bundled_model))
    yield running
    running.stop()


@pytest.mark.llama
def test_the_bundled_model_answers_streamed_and_not(llama_server: RunningServer) -> None:
    client = _client(llama_server)
    messages = [{"role": "user", "content": "Say hello."}]
    whole = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model="smollm2", messages=messages, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content and whole.usage.completion_tokens <= 8
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert streamed == whole.choices[0].message.content  # greedy: the same answer either way
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    # The second identical prompt reused the KV cache / prompt cache of the first.
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0


@pytest.mark.llama
def test_the_bundled_model_returns_tool_calls_and_smoltui_runs_none(llama_server: RunningServer) -> None:
    client = _client(llama_server)
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    # The client runs its own tools: smoltui asked nobody and recorded nothing.
    with llama_server.unix() as api:
        assert api.get("/api/audit").json() == []
        assert api.get("/api/approvals").json() == []

    follow_up = client.chat.completions.create(model="smollm2", max_tokens=8, temperature=0, tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}])
    assert follow_up.choices[0].finish_reason in ("stop", "length", "tool_calls")
