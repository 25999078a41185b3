"""OpenAI-compatible endpoints, ``/v1/models`` and ``/v1/chat/completions``, answered by the
server's one loaded model: any OpenAI client (the ``openai`` package, oterm, llm, aider) can use it.

A completion takes its turn on the model like a chat or a workflow task does (first come, first
served) and gets the backend's KV reuse and prompt cache. ``tools`` come back as ``tool_calls`` for
the client to run: smoltui runs nothing here, so its approvals do not apply to what a client does.

What is understood, beyond ``messages``:

- ``stream`` (with ``stream_options.include_usage``), ``max_tokens`` / ``max_completion_tokens``,
  ``temperature``, ``top_p``, ``seed``, ``stop``;
- ``tools`` and ``tool_choice`` (``none``, ``auto``, ``required``, or one named function);
- ``response_format``: ``json_object`` or ``json_schema`` (the reply is held to the schema);
- thinking on or off: ``"think": true|false`` (smoltui's own field, sent with the openai package as
  ``extra_body``), else ``chat_template_kwargs.enable_thinking`` (as vLLM and llama-server take
  it), else ``reasoning_effort`` (``none`` or ``minimal``: off; ``low``, ``medium``, ``high``: on),
  else the config's ``[chat] think``. Reasoning comes back as ``reasoning_content``, never inside
  ``content``.

``n`` above 1, audio and images are refused with a 400. ``model`` may name any model: there is one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    GenerationStats,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from smoltui.errors import SmoltuiError
from smoltui.server.errors import ApiError, bad_request
from smoltui.server.routes import core_of

if TYPE_CHECKING:
    from smoltui.core import Core

router = APIRouter(prefix="/v1", tags=["openai"])

THINK_OFF_EFFORTS = ("none", "minimal")


class ChatCompletionRequest(BaseModel):
    """OpenAI's request body; fields smoltui does not use are accepted and ignored (clients send many)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    think: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None


@router.get("/models", summary="The one model this server answers with")
async def models(request: Request) -> dict[str, Any]:
    core = core_of(request)
    return {"object": "list", "data": [{"id": model_name(core), "object": "model",
                                        "created": int(request.app.state.smoltui.started_at), "owned_by": "smoltui"}]}


def model_name(core: Core) -> str:
    backend = core.model.backend
    return backend.model_name if backend is not None else core.model.label


@router.post("/chat/completions", summary="A chat completion (streamed or not) from the loaded model")
async def chat_completions(request: Request, body: ChatCompletionRequest) -> Any:
    core = core_of(request)
    if body.n is not None and body.n > 1:
        raise bad_request("n: only one choice per request is supported")
    messages = to_chat_messages(body.messages)
    params = await _params(core, body)
    try:
        backend = await core.model.loaded()
    except SmoltuiError as error:
        raise ApiError(503, f"the model is not available: {error}", "model_unavailable") from None
    used = await backend.count_tokens(messages, params)
    room = backend.context_size - used
    if room < 1:
        raise ApiError(400, f"the prompt takes {used} tokens; the model's context holds {backend.context_size}",
                       "context_length_exceeded")
    params = replace(params, max_tokens=min(params.max_tokens, room))
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    completion = _Completion(core, messages, params, stops)
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(completion.chunks(include_usage=usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(await completion.whole())


# -- the request -----------------------------------------------------------------------------------


def to_chat_messages(raw: Sequence[dict[str, Any]]) -> list[ChatMessage]:
    """OpenAI's messages as ours. An assistant turn's ``tool_calls`` are written back into its text
    as the model writes them, so the prompt shows the model its own calls."""
    from smoltui.backends.tool_calls import format_call

    out: list[ChatMessage] = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        role = message.get("role")
        content = _text(message.get("content"), where)
        if role in ("system", "developer"):
            out.append(ChatMessage("system", content))
        elif role == "user":
            out.append(ChatMessage("user", content))
        elif role == "assistant":
            calls = []
            for position, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise bad_request(f"{where}.tool_calls[{position}]: a call needs function.name")
                arguments = function.get("arguments") or "{}"
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments)
                calls.append(ToolCallDelta(str(call.get("id") or f"call_{index}_{position}"), function["name"],
                                           arguments))
            markup = "\n".join(format_call(c.name, _object(c.arguments)) for c in calls)
            text = "\n".join(part for part in (content, markup) if part)
            thinking = message.get("reasoning_content")
            out.append(ChatMessage("assistant", text, thinking if isinstance(thinking, str) else None,
                                   tool_calls=tuple(calls)))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            out.append(ChatMessage("tool", content, tool_call_id=call_id if isinstance(call_id, str) else None))
        else:
            raise bad_request(f"{where}.role: {role!r} is not one of system, developer, user, assistant, tool")
    return out


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{where}.content: only text parts are supported, not {kind!r}")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"{where}.content must be text or a list of text parts")


def _object(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def _params(core: Core, body: ChatCompletionRequest) -> GenerationParams:
    from smoltui.core import chat_params

    params = chat_params(core.config, think=_think(core, body),
                         max_tokens=body.max_completion_tokens or body.max_tokens)
    changes: dict[str, Any] = {}
    if body.temperature is not None:
        changes["temperature"] = body.temperature
    if body.top_p is not None:
        changes["top_p"] = body.top_p
    if body.seed is not None:
        changes["seed"] = body.seed
    tools, choice = _tools(body)
    if tools:
        changes["tools"] = tools
        changes["tool_choice"] = choice
    schema = _schema(body.response_format)
    if schema is not None:
        changes["json_schema"] = schema
    return replace(params, **changes)


def _think(core: Core, body: ChatCompletionRequest) -> bool:
    if body.think is not None:
        return body.think
    enable = (body.chat_template_kwargs or {}).get("enable_thinking")
    if isinstance(enable, bool):
        return enable
    if body.reasoning_effort is not None:
        return body.reasoning_effort.strip().lower() not in THINK_OFF_EFFORTS
    return core.config.chat.think


def _tools(body: ChatCompletionRequest) -> tuple[list[dict[str, Any]], str]:
    tools = body.tools or []
    for index, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"tools[{index}]: expected {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
    choice = body.tool_choice
    if choice is None or choice == "auto":
        return tools, "auto"
    if choice == "none":
        return [], "auto"
    if choice == "required":
        if not tools:
            raise bad_request("tool_choice: 'required' needs tools")
        return tools, "required"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise bad_request(f"tool_choice: no tool named {name!r} among the tools")
        return chosen, "required"
    raise bad_request(f"tool_choice: {choice!r} is not none, auto, required or a function")


def _schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be a JSON schema object")
        return schema
    raise bad_request(f"response_format.type: {kind!r} is not text, json_object or json_schema")


# -- the answer ------------------------------------------------------------------------------------


class StopScanner:
    """Cuts the reply at the first stop sequence; streamed text holds back what might be the start
    of one until it is sure it is not."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.buffer += text
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer, self.stopped = self.buffer[:cut], "", True
            return out
        keep = len(self.buffer) - self.hold
        out, self.buffer = self.buffer[:max(keep, 0)], self.buffer[max(keep, 0):]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class _Completion:
    def __init__(self, core: Core, messages: list[ChatMessage], params: GenerationParams, stops: list[str]) -> None:
        self.core = core
        self.messages = messages
        self.params = params
        self.stops = stops
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model_name(core)

    async def _events(self) -> AsyncIterator[TextDelta | ThinkingDelta | ToolCallDelta | Finished]:
        """The backend's events, one turn on the model; a stop sequence or a client gone ends it."""
        cancel = CancelToken()
        scanner = StopScanner(self.stops)
        async with self.core.model.turn("openai client") as backend, \
                aclosing(backend.stream(self.messages, self.params, cancel)) as events:
            try:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if scanner.stopped:
                            continue
                        text = scanner.feed(event.text)
                        if scanner.stopped:
                            cancel.cancel()
                        if text:
                            yield TextDelta(text)
                    elif isinstance(event, Finished):
                        rest = "" if scanner.stopped else scanner.flush()
                        if rest:
                            yield TextDelta(rest)
                        stats = event.stats
                        if scanner.stopped:
                            stats = replace(stats, stop_reason="stop")
                        yield Finished(stats)
                    else:
                        yield event
            except BaseException:
                cancel.cancel()  # the client went away: stop decoding for nobody
                raise

    async def whole(self) -> dict[str, Any]:
        text: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCallDelta] = []
        stats: GenerationStats | None = None
        try:
            async for event in self._events():
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, ThinkingDelta):
                    thinking.append(event.text)
                elif isinstance(event, ToolCallDelta):
                    if event.name:
                        calls.append(event)
                    else:  # not a call anyone could run: the client sees what the model wrote
                        text.append(event.raw or event.arguments)
                elif isinstance(event, Finished):
                    stats = event.stats
        except SmoltuiError as error:
            raise ApiError(502, f"generation failed: {error}", "generation_failed") from None
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
        if thinking:
            message["reasoning_content"] = "".join(thinking)
        if calls:
            message["tool_calls"] = [_call(c) for c in calls]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": _finish(stats, calls),
                             "logprobs": None}],
                "usage": _usage(stats)}

    async def chunks(self, *, include_usage: bool) -> AsyncIterator[str]:
        yield self._chunk({"role": "assistant", "content": ""})
        calls = 0
        stats: GenerationStats | None = None
        try:
            async for event in self._events():
                if isinstance(event, TextDelta):
                    yield self._chunk({"content": event.text})
                elif isinstance(event, ThinkingDelta):
                    yield self._chunk({"reasoning_content": event.text})
                elif isinstance(event, ToolCallDelta):
                    if event.name:
                        yield self._chunk({"tool_calls": [{"index": calls, **_call(event)}]})
                        calls += 1
                    else:
                        yield self._chunk({"content": event.raw or event.arguments})
                elif isinstance(event, Finished):
                    stats = event.stats
        except SmoltuiError as error:
            body = {"error": {"type": "generation_failed", "message": f"generation failed: {error}"}}
            yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
            return
        yield self._chunk({}, finish=_finish(stats, [None] * calls))
        if include_usage:
            yield self._sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.model, "choices": [], "usage": _usage(stats)})
        yield "data: [DONE]\n\n"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        return self._sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                          "model": self.model,
                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    @staticmethod
    def _sse(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _call(call: ToolCallDelta) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _finish(stats: GenerationStats | None, calls: Sequence[object]) -> str:
    if calls:
        return "tool_calls"
    if stats is not None and stats.stop_reason == "length":
        return "length"
    return "stop"


def _usage(stats: GenerationStats | None) -> dict[str, Any]:
    if stats is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_tokens}}


__all__ = ["ChatCompletionRequest", "StopScanner", "router", "to_chat_messages"]
