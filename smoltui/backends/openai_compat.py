"""A backend that streams from any OpenAI-compatible server (llama-server, vLLM, Ollama, LM Studio, ...).

``POST {base_url}/v1/chat/completions`` with ``stream: true``: the reply arrives as server-sent events,
one JSON chunk per ``data:`` field, ended by ``data: [DONE]``. A chunk's delta carries answer text
(``content``), reasoning (``reasoning_content``, or ``reasoning`` on some servers) and tool calls, whose
``id``, name and arguments arrive in fragments keyed by ``index``. SmolLM3 served with its own template
may also write ``<think>…</think>`` into ``content``: the :class:`ThinkParser` splits that off.

Every failure becomes one line a user can act on: an unreachable server names the URL, a rejected key
says so, a missing model names the model, a server error quotes the server's own message, and a stream
that ends early says after how many tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import httpx

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    GenerationStats,
    LoadProgress,
    ProgressCallback,
    StreamEvent,
    ThinkingDelta,
    ToolCallDelta,
)
from smoltui.backends.think_parser import ThinkParser
from smoltui.errors import BackendError, ModelError, NetworkError

# How often a wait on the server looks at the cancel token (it is a threading.Event: not awaitable).
_CANCEL_POLL_S = 0.05


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str = "http://127.0.0.1:8080"
    api_key: str | None = None
    model: str = ""
    """The server's model id; empty: the first model the server lists."""
    context_size: int = 8192
    timeout_s: float = 120.0
    """Connect and per-chunk read timeout (a long prompt can take a while to its first chunk)."""
    think_flag: bool = True
    """Append SmolLM3's ``/think`` or ``/no_think`` to the system prompt (its template reads and strips it)."""


def api_root(base_url: str) -> str:
    """``http://host:8080``, ``…/`` and ``…/v1`` all mean the API at ``…/v1``."""
    root = base_url.strip().rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


def server_message(response: httpx.Response) -> str:
    """The error text a server put in its body (OpenAI's ``{"error": {"message"}}`` and the variants)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    return _error_text(body) if body is not None else (" ".join(response.text.split())[:300] or response.reason_phrase)


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                return _error_text(body[key])
    if isinstance(body, str):
        return body
    return json.dumps(body)[:300]


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Our history in OpenAI's shape: assistant tool calls as ``tool_calls``, results as ``tool`` turns.

    A tool result that does not know its call's id gets the id of the previous assistant turn's
    call in the same position (results come back in the order the calls were made).
    """
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant":
            pending = [c.id for c in m.tool_calls]
            if m.tool_calls:
                item["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in m.tool_calls
                ]
        elif m.role == "tool":
            call_id = m.tool_call_id or (pending.pop(0) if pending else None)
            if m.tool_call_id in pending:
                pending.remove(m.tool_call_id)
            if call_id:
                item["tool_call_id"] = call_id
        out.append(item)
    return out


def with_think_flag(messages: list[dict[str, Any]], think: bool) -> list[dict[str, Any]]:
    """SmolLM3's reasoning switch: ``/think`` or ``/no_think`` at the end of the system message."""
    flag = "/think" if think else "/no_think"
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        content = first["content"].rstrip()
        first["content"] = f"{content}\n{flag}" if content else flag
        return [first, *messages[1:]]
    return [{"role": "system", "content": flag}, *messages]


def estimate_tokens(messages: Sequence[ChatMessage], tools: Sequence[dict] | None = None) -> int:
    """A generous estimate (there is no standard tokenize endpoint): ~3.5 characters a token."""
    chars = sum(len(m.content) + len(m.thinking or "") for m in messages)
    chars += sum(len(c.arguments) + len(c.name) for m in messages for c in m.tool_calls)
    if tools:
        chars += len(json.dumps(list(tools)))
    return int(chars / 3.5) + 5 * len(messages) + 3


class _ToolCalls:
    """Accumulates streamed tool-call fragments by index; hands out each call once it is complete."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, str]] = {}
        self._emitted: set[int] = set()

    def feed(self, fragments: Any) -> list[ToolCallDelta]:
        """Add fragments; a fragment for a new index means the calls before it are complete."""
        if not isinstance(fragments, list):
            raise BackendError(f"the server sent malformed tool calls: {json.dumps(fragments)[:200]}")
        ready: list[ToolCallDelta] = []
        for position, fragment in enumerate(fragments):
            if not isinstance(fragment, dict):
                raise BackendError(f"the server sent a malformed tool call: {json.dumps(fragment)[:200]}")
            index = fragment.get("index", position)
            if index not in self._parts:
                ready += self._finish(below=index)
                self._parts[index] = {"id": "", "name": "", "arguments": ""}
            part = self._parts[index]
            function = fragment.get("function") or {}
            part["id"] += fragment.get("id") or ""
            part["name"] += function.get("name") or ""
            arguments = function.get("arguments")
            # Some servers send the arguments as an object in one piece instead of text fragments.
            part["arguments"] += arguments if isinstance(arguments, str) else json.dumps(arguments) if arguments else ""
        return ready

    def finish(self) -> list[ToolCallDelta]:
        return self._finish(below=None)

    def _finish(self, below: int | None) -> list[ToolCallDelta]:
        out = []
        for index in sorted(self._parts):
            if index in self._emitted or (below is not None and index >= below):
                continue
            self._emitted.add(index)
            part = self._parts[index]
            out.append(ToolCallDelta(part["id"] or f"call_{index}", part["name"], part["arguments"] or "{}"))
        return out


class OpenAICompatBackend:
    name = "openai"

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self.root = api_root(settings.base_url)
        self.model_name = settings.model or "(server default)"
        self._model = settings.model
        self._client: httpx.AsyncClient | None = None
        self.served_models: list[str] = []

    @property
    def context_size(self) -> int:
        return self.settings.context_size

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Accept": "application/json"}
            if self.settings.api_key:
                headers["Authorization"] = f"Bearer {self.settings.api_key}"
            timeout = httpx.Timeout(self.settings.timeout_s, connect=min(10.0, self.settings.timeout_s))
            self._client = httpx.AsyncClient(headers=headers, timeout=timeout)
        return self._client

    # -- loading ---------------------------------------------------------------------------------

    async def load(self, progress: ProgressCallback | None = None) -> None:
        """Check the server answers, accepts the key and serves the model."""
        report = progress or (lambda _: None)
        report(LoadProgress(0.1, f"connecting to {self.root}"))
        url = f"{self.root}/models"
        try:
            response = await self._http().get(url)
        except httpx.HTTPError as error:
            raise self._network_error(error) from None
        if response.status_code >= 400:
            if response.status_code == 404:
                raise NetworkError(f"no OpenAI-compatible API at {self.root} (GET /v1/models answered 404)")
            raise self._status_error(response)
        try:
            listed = response.json()["data"]
            self.served_models = [str(item["id"]) for item in listed]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise NetworkError(f"{url} did not answer with an OpenAI model list: {response.text[:200]!r}") from None
        if not self._model:
            if not self.served_models:
                raise ModelError(f"the server at {self.root} serves no model")
            self._model = self.model_name = self.served_models[0]
        elif not self._serves(self._model):
            listed_names = ", ".join(self.served_models[:10]) or "none"
            raise ModelError(
                f"the server at {self.root} does not serve the model {self._model!r} (it serves: {listed_names})"
            )
        report(LoadProgress(1.0, f"ready: {self._model} at {self.root}"))

    def _serves(self, model: str) -> bool:
        # Ollama lists "smollm3:latest" for "smollm3".
        return any(m == model or m.split(":")[0] == model for m in self.served_models)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def count_tokens(self, messages: Sequence[ChatMessage], params: GenerationParams) -> int:
        return estimate_tokens(messages, params.tools)

    # -- errors ----------------------------------------------------------------------------------

    def _network_error(self, error: httpx.HTTPError) -> NetworkError:
        if isinstance(error, httpx.TimeoutException):
            what = f"timed out after {self.settings.timeout_s:g}s"
        elif isinstance(error, httpx.ConnectError):
            what = f"cannot connect ({error or 'connection refused'})"
        else:
            what = f"{type(error).__name__}: {error}"
        return NetworkError(f"the server at {self.root} is unreachable: {what}")

    def _status_error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        text = server_message(response)
        if status in (401, 403):
            return NetworkError(
                f"API key rejected by {self.root} ({status}: {text}); set [openai] api_key in the config "
                "or SMOLTUI_OPENAI_API_KEY"
            )
        if status == 404:
            return ModelError(f"the server at {self.root} has no model {self._model!r} (404: {text})")
        if status == 429:
            return BackendError(f"the server at {self.root} is rate limiting requests (429: {text})")
        return BackendError(f"the server at {self.root} answered {status}: {text}")

    # -- generation ------------------------------------------------------------------------------

    def request_body(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        chat = to_openai_messages(messages)
        if self.settings.think_flag:
            chat = with_think_flag(chat, params.think)
        body: dict[str, Any] = {
            "model": self._model,
            "messages": chat,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.tools:
            body["tools"] = list(params.tools)
        if params.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": dict(params.json_schema), "strict": True},
            }
        return body

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, cancel: CancelToken
    ) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        run = _Run(started, estimate_tokens(messages, params.tools))
        url = f"{self.root}/chat/completions"
        try:
            async with self._http().stream("POST", url, json=self.request_body(messages, params)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._status_error(response)
                async with aclosing(self._events(response, run, cancel)) as events:
                    async for event in events:
                        yield event
        except httpx.HTTPError as error:
            if cancel.cancelled:
                run.stop = "cancelled"
            elif isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
                raise self._network_error(error) from None
            elif isinstance(error, httpx.TimeoutException):
                raise BackendError(
                    f"the server at {self.root} sent nothing for {self.settings.timeout_s:g}s "
                    f"(after {run.pieces} tokens)"
                ) from None
            else:
                raise BackendError(
                    f"the server closed the stream after {run.pieces} tokens ({type(error).__name__}: {error})"
                ) from None
        for event in run.finish_tools():
            yield event
        yield Finished(run.stats(self.context_size))

    async def _events(self, response: httpx.Response, run: _Run, cancel: CancelToken) -> AsyncIterator[StreamEvent]:
        lines = response.aiter_lines()
        data: list[str] = []
        while True:
            line = await _next_line(lines, cancel)
            if line is _CANCELLED:
                run.stop = "cancelled"
                return
            if line is None:  # end of body: a blank line may not have closed the last event
                if data:
                    for event in run.chunk("\n".join(data)):
                        yield event
                if not run.done:
                    raise BackendError(f"the server closed the stream after {run.pieces} tokens")
                return
            assert isinstance(line, str)
            if line == "":
                if data:
                    payload, data = "\n".join(data), []
                    for event in run.chunk(payload):
                        yield event
                    if run.ended:
                        return
                continue
            if line.startswith(":"):  # an SSE comment (keep-alive)
                continue
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)


_CANCELLED = object()


async def _next_line(lines: AsyncIterator[str], cancel: CancelToken) -> object:
    """The next line, ``None`` at the end, or ``_CANCELLED`` as soon as the token is set."""
    if cancel.cancelled:
        return _CANCELLED
    task = asyncio.ensure_future(anext(lines, None))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_CANCEL_POLL_S)
            if done:
                return task.result()
            if cancel.cancelled:
                return _CANCELLED
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _Run:
    """The state of one streamed reply: parsing, tool-call accumulation and the numbers for the stats."""

    def __init__(self, started: float, prompt_estimate: int) -> None:
        self.started = started
        self.first_at: float | None = None
        self.pieces = 0
        """Content chunks received: the token count when the server reports no usage."""
        self.prompt_estimate = prompt_estimate
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.stop = "stop"
        self.done = False
        """``[DONE]`` arrived, or a finish reason did (a few servers end without ``[DONE]``)."""
        self.ended = False
        self.parser = ThinkParser()
        self.tools = _ToolCalls()

    def _mark(self) -> None:
        self.pieces += 1
        if self.first_at is None:
            self.first_at = time.perf_counter()

    def chunk(self, payload: str) -> list[StreamEvent]:
        if payload.strip() == "[DONE]":
            self.done = self.ended = True
            return []
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            raise BackendError(f"the server sent a malformed stream chunk: {payload[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise BackendError(f"the server sent a malformed stream chunk: {payload[:200]!r}")
        if "error" in chunk:
            raise BackendError(f"the server failed mid-reply: {_error_text(chunk)}")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise BackendError(f"the server sent a malformed stream chunk: {payload[:200]!r}")
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._mark()
                out.append(ThinkingDelta(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._mark()
                out += self.parser.feed(content)
            if delta.get("tool_calls"):
                self._mark()
                out += self.tools.feed(delta["tool_calls"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.done = True
                out += self.finish_tools()
        return out

    def finish_tools(self) -> list[StreamEvent]:
        return [*self.parser.flush(), *self.tools.finish()]

    def stats(self, context_size: int) -> GenerationStats:
        ended = time.perf_counter()
        first_at = self.first_at or ended
        usage = self.usage or {}
        prompt = int(usage.get("prompt_tokens") or self.prompt_estimate)
        completion = int(usage.get("completion_tokens") or self.pieces)
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        ttft = first_at - self.started
        decode_s = ended - first_at
        stop = self.stop
        if stop != "cancelled" and self.finish_reason == "length":
            stop = "length"
        return GenerationStats(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            ttft_s=ttft,
            prefill_tok_s=(prompt - cached) / ttft if ttft > 0 else 0.0,
            decode_tok_s=(completion - 1) / decode_s if completion > 1 and decode_s > 0 else 0.0,
            context_used=prompt + completion,
            context_size=context_size,
            total_s=ended - self.started,
            stop_reason=stop,  # type: ignore[arg-type]
        )
