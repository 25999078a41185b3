"""Render prompts from a model's own Jinja chat template, sandboxed, the way transformers does.

A GGUF carries its chat template as text; SmolLM3's uses transformers' additions (the
``{% generation %}`` tag, ``strftime_now``), so a plain Jinja environment cannot render it. The
environment below mirrors ``transformers.utils.chat_template_utils._compile_jinja_template``: an
immutable sandbox (a template is foreign code that came with a downloaded file), ``trim_blocks`` and
``lstrip_blocks``, loop controls, ``raise_exception``, ``strftime_now`` and a ``tojson`` that does not
HTML-escape. Rendering matches ``apply_chat_template(..., tokenize=False)`` byte for byte, which is what
the model was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from smoltui.backends.base import ChatMessage
from smoltui.errors import ModelError

# The template SmolLM2-Instruct ships (verbatim from its GGUF): the fallback for a GGUF without one.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Two first-message contents that differ from their first character: where their renders part is
# where the first message's content begins (see system_prefix).
_PROBES = ("\x00probe-a", "\x01probe-b")


class _GenerationExtension(Extension):
    """``{% generation %}…{% endgeneration %}``: transformers marks assistant spans with it; we just render."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> NoReturn:
    raise ModelError(f"the chat template refused the conversation: {message}")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson HTML-escapes (<, >, &, '), which would change what the model sees.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _common_prefix(a: str, b: str) -> str:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return a[:size]


class ChatTemplate:
    """A compiled chat template. Build once per model; ``render`` is cheap and thread-safe."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        clock = now or datetime.now
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_GenerationExtension, "jinja2.ext.loopcontrols"],
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: clock().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as error:
            raise ModelError(f"the model's chat template is invalid: {error}") from error

    @property
    def supports_thinking(self) -> bool:
        """Whether the template knows a reasoning switch (SmolLM3's ``enable_thinking`` / ``/think``)."""
        return "enable_thinking" in self.source or "/think" in self.source

    @property
    def supports_tools(self) -> bool:
        """Whether the template writes the offered tools into the prompt itself (SmolLM3's does)."""
        return "tools" in self.source

    def _with_tools(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict] | None
    ) -> tuple[Sequence[ChatMessage], Sequence[dict] | None]:
        """For a template that ignores ``tools`` (plain ChatML), the tools go into the system message,
        worded as SmolLM3's template words them, so the model still learns what it may call."""
        if not tools or self.supports_tools:
            return messages, tools
        from smoltui.backends.tool_calls import tools_system_block

        block = tools_system_block(tools)
        if messages and messages[0].role == "system":
            first = messages[0]
            joined = f"{first.content.rstrip()}\n\n{block}" if first.content.strip() else block
            return [ChatMessage("system", joined, first.thinking), *messages[1:]], None
        return [ChatMessage("system", block), *messages], None

    def render(
        self,
        messages: Sequence[ChatMessage],
        *,
        add_generation_prompt: bool = True,
        think: bool | None = None,
        tools: Sequence[dict] | None = None,
    ) -> str:
        """The prompt text for ``messages``; ``think=None`` leaves the template's default mode."""
        messages, tools = self._with_tools(messages, tools)
        return self._render(
            [self._message_dict(m, think) for m in messages],
            add_generation_prompt=add_generation_prompt,
            think=think,
            tools=tools,
        )

    def system_prefix(
        self,
        messages: Sequence[ChatMessage],
        *,
        think: bool | None = None,
        tools: Sequence[dict] | None = None,
    ) -> str:
        """The start of ``render(messages, ...)`` that only depends on the system part, or "".

        The backend prefills and keeps this prefix's KV state. When there is no system message the
        prefix is what an empty conversation renders; templates that index ``messages[0]`` (SmolLM3's)
        cannot render one, so the prefix then runs up to where the first message's content begins.
        "" when nothing reliable can be cut, e.g. the date changed between the two renders at midnight.
        """
        if not messages:
            return ""
        messages, tools = self._with_tools(messages, tools)
        full = self.render(messages, think=think, tools=tools)
        try:
            prefix = self._leading_part(messages, think=think, tools=tools)
        except ModelError:
            return ""
        return prefix if full.startswith(prefix) else ""

    def _leading_part(
        self, messages: Sequence[ChatMessage], *, think: bool | None, tools: Sequence[dict] | None
    ) -> str:
        first = messages[0]
        if first.role == "system":
            return self.render([first], add_generation_prompt=False, think=think, tools=tools)
        try:
            empty = self._render([], add_generation_prompt=False, think=think, tools=tools)
        except ModelError:
            empty = ""
        if empty:
            return empty
        # The template needs a first message to render its header (or writes its default system prompt
        # only next to one, like ChatML): the part before that message's content is shared by every
        # conversation that opens with the same role.
        a, b = (
            self.render(
                [ChatMessage(first.role, probe)], add_generation_prompt=False, think=think, tools=tools
            )
            for probe in _PROBES
        )
        return _common_prefix(a, b)

    def _message_dict(self, message: ChatMessage, think: bool | None) -> dict[str, str]:
        content = message.content
        # Only in think mode does the model see its own reasoning again: re-inserting it exactly as it
        # was generated keeps the rendered history equal to the tokens already in the KV cache.
        if message.role == "assistant" and message.thinking is not None and think is True:
            content = "<think>\n" + message.thinking + "\n</think>\n" + content
        return {"role": message.role, "content": content}

    def _render(
        self,
        messages: list[dict[str, str]],
        *,
        add_generation_prompt: bool,
        think: bool | None,
        tools: Sequence[dict] | None,
    ) -> str:
        # Same context as transformers' apply_chat_template: tools and documents always present (None
        # when absent), special tokens by name, then the template kwargs.
        context: dict[str, Any] = {
            "messages": messages,
            "tools": list(tools) if tools is not None else None,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if think is not None:
            context["enable_thinking"] = think
        try:
            return self._template.render(**context)
        except ModelError:
            raise
        # The template is foreign code: whatever it raises (TypeError from "a" + 1, too) is its failure.
        except Exception as error:
            raise ModelError(f"the model's chat template failed to render: {error}") from error
