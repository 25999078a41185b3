"""Render prompts from a model's own Jinja chat template, sandboxed, the way transformers does.

A GGUF carries its chat template as text; SmolLM3's uses transformers' additions (the
``{% generation %}`` tag, ``strftime_now``), so a plain Jinja environment cannot render it. The
environment below mirrors ``transformers.utils.chat_template_utils._compile_jinja_template``: an
immutable sandbox (a template is foreign code that came with a downloaded file), ``trim_blocks`` and
``lstrip_blocks``, loop controls, ``raise_exception``, ``strftime_now`` and a ``tojson`` that does not
HTML-escape. Rendering matches ``apply_chat_template(..., tokenize=False)`` byte for byte, which is what
the model was trained on.

A template is also code that may run forever or fill the memory: two nested ``range(100000)`` loops,
a macro that calls itself twice, a list of lists of the same list (a "billion laughs") printed. Every
render runs under a budget (:class:`_Budget`): a deadline (:data:`RENDER_SECONDS`) and a size
(:data:`MAX_RENDER_CHARS` plus four times the conversation's own size) that the output and every
value the template builds must stay under. The budget is checked where a template can spend: each
step of every ``for`` loop, every call (macros, methods, globals), every filter, the ``*``, ``**``,
``%`` and ``+`` operators, every ``~``, list, tuple and dict the template writes, and each piece of
output. Where one step could allocate a lot at once (``'x' * n``, ``s.ljust(n)``, ``s.replace(a, b)``,
``sep.join(items)``, ``'%9999999d' % 1``, ``indent(n)``) its size is worked out *before* the step
runs; a value's size counts a shared item once per place it occurs, so a deep list of repeated
lists weighs what printing it would write. Over budget, the render stops with a :class:`ModelError`
that names the model file (``origin``).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.visitor import NodeTransformer

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

RENDER_SECONDS = 5.0
"""A render still running after this many seconds is stopped."""
MAX_RENDER_CHARS = 4_000_000
"""Characters a render may write (or any value it builds may weigh), besides 4 × the conversation's."""
MAX_TEMPLATE_CHARS = 100_000
"""A chat template longer than this is refused before it is compiled (real ones are 1-20 KB; Jinja
compiles some 20 KB a second of dense expressions)."""
_MAX_ARGUMENT = 100_000  # the largest number a template may pass to a call or filter (range aside)
_MAX_NESTING = 100  # levels a value the template weighs may nest
_MAX_POWER_BITS = 65_536

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


class _Refused(Exception):
    """``raise_exception(...)`` in the template: it does not accept this conversation."""


def _raise_exception(message: str) -> NoReturn:
    raise _Refused(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    if isinstance(indent, int) and indent > 16:  # written once per line and level: n × the value's size
        raise BudgetExceeded(f"asked tojson for an indent of {indent} (16 at most)")
    # Jinja's own tojson HTML-escapes (<, >, &, '), which would change what the model sees.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


# ── the budget ────────────────────────────────────────────────────────────────────────────────────


class BudgetExceeded(Exception):
    """A render went past its budget, or a step would build too much; the message says how (as the
    end of a sentence that starts with "it ...")."""


class _Budget:
    """One render's deadline and size limit (see the module docstring)."""

    def __init__(self, seconds: float, chars: int) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.chars = chars

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"ran longer than {self.seconds:g} s")

    def allow(self, size: int, what: str) -> None:
        """Refuse a step that would build ``size`` characters."""
        if size > self.chars:
            raise BudgetExceeded(f"would build {what} of {size:,} characters ({self.chars:,} at most)")

    def check(self, value: Any, what: str = "a value") -> None:
        self.allow(value_size(value, self.chars), what)


_budget: ContextVar[_Budget | None] = ContextVar("smoltui_chat_template_budget", default=None)


# The sizes below are shared with the workflow templates (smoltui.orchestrator.templating).


def value_size(value: Any, limit: float) -> int:
    """Characters ``value`` amounts to, counting an item each time it occurs (shared or not); once
    past ``limit`` the count stops early and returns something over it. Raises BudgetExceeded for a
    value nested deeper than 100 levels."""
    if isinstance(value, str | bytes):
        return len(value)
    if not isinstance(value, list | tuple | dict | set | frozenset):
        return 1
    seen: dict[int, int] = {}

    def weigh(item: Any, depth: int) -> int:
        if isinstance(item, str | bytes):
            return len(item)
        if not isinstance(item, list | tuple | dict | set | frozenset):
            return 1
        known = seen.get(id(item))
        if known is not None:
            return known
        if depth > _MAX_NESTING:
            raise BudgetExceeded(f"built a value nested more than {_MAX_NESTING} levels deep")
        total = len(item)
        parts: Iterable[Any] = (x for pair in item.items() for x in pair) if isinstance(item, dict) else item
        for part in parts:
            total += weigh(part, depth + 1)
            if total > limit:
                break
        seen[id(item)] = total
        return total

    return weigh(value, 0)


_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[a-zA-Z%]")
_FORMAT_FIELD = re.compile(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")
_NUMBER = re.compile(r"\d+")


def _format_size(template: str, args: Iterable[Any], pattern: re.Pattern[str], limit: int) -> int:
    """An upper bound of what formatting ``template`` with ``args`` writes (over ``limit``: stops early).

    Each field writes its width, precision or widest argument (a list or dict as text: up to four
    characters per character it weighs); a width taken from an argument (``{:{w}}``, ``%*d``) is at
    most the largest number among the arguments. Digits in a field count as a width: generous.
    """
    values = list(args)
    numbers = [abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]
    widest = max((_printed_size(v, limit) for v in values), default=0)
    largest_number = max(numbers, default=0)
    total = len(template)
    for field in pattern.finditer(template):
        text = field.group(0)
        nested = "*" in text or "{" in text[1:]
        total += widest + 4 + sum(int(n) for n in _NUMBER.findall(text)) + (largest_number if nested else 0)
        if total > limit:
            break
    return total


def _printed_size(value: Any, limit: int) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 2  # decimal digits and a sign, at most
    return 4 * value_size(value, limit)


def str_method_size(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> int:
    """How long ``text.<name>(*args, **kwargs)`` can be, for the str methods whose result can be far
    longer than their inputs (``join`` only over a list or tuple); 0 for the others."""
    if name == "join" and args and isinstance(args[0], list | tuple):
        return _joined_size(text, args[0], limit)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        count = text.count(old) if old else len(text) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        return len(text) + count * max(0, len(new) - len(old))
    if name in ("ljust", "rjust", "center", "zfill") and args and isinstance(args[0], int):
        return max(len(text), args[0])
    if name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        return len(text) + text.count("\t") * (size if isinstance(size, int) else 8)
    if name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((value_size(v, limit) for v in args[0].values()), default=1)
        return len(text) * max(1, longest)
    if name in ("format", "format_map"):
        values = [*args, *kwargs.values()]
        if name == "format_map" and args and isinstance(args[0], Mapping):
            values = list(args[0].values())
        return _format_size(text, values, _FORMAT_FIELD, limit)
    return 0


def _joined_size(separator: str, items: Sequence[Any], limit: int) -> int:
    return len(separator) * max(0, len(items) - 1) + value_size(list(items), limit)


def _check_arguments(budget: _Budget, args: Iterable[Any]) -> None:
    """Numbers a template passes to a call or filter stay small; values stay under the budget."""
    for value in args:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_ARGUMENT:
            raise BudgetExceeded(f"passed the number {value:,} to a call ({_MAX_ARGUMENT:,} at most)")
        budget.check(value, "an argument")


def binop_size(operator: str, left: Any, right: Any, limit: int) -> int:
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, str | bytes | list | tuple) and isinstance(times, int):
                return value_size(sequence, limit) * max(0, times)
        return 0
    if operator == "%" and isinstance(left, str):
        values = right if isinstance(right, tuple) else right.values() if isinstance(right, Mapping) else [right]
        return _format_size(left, values, _PRINTF_FIELD, limit)
    if operator == "+":
        return value_size(left, limit) + value_size(right, limit)
    return 0


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with the budget of the render in progress checked at every step a
    template can spend on (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget.get()
        if budget is not None and operator == "+" and isinstance(left, str) and isinstance(right, str):
            budget.tick()  # the usual case, kept short: '<|im_start|>' + message['role'] + ...
            budget.allow(len(left) + len(right), "the result of `+`")
        elif budget is not None:
            budget.tick()
            if (operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0
                    and left.bit_length() * right > _MAX_POWER_BITS):
                raise BudgetExceeded(f"asked for a number of more than {_MAX_POWER_BITS:,} bits")
            budget.allow(binop_size(operator, left, right, budget.chars), f"the result of `{operator}`")
        return super().call_binop(context, operator, left, right)

    def call(  # noqa: N805 - SandboxedEnvironment.call's names, kept clear of the caller's keywords
        __self,  # noqa: B902
        __context: Any,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget = _budget.get()
        if budget is None:
            return super().call(__context, __obj, *args, **kwargs)
        budget.tick()
        if __obj is not safe_range:  # range() has the sandbox's own limit (100,000 items)
            _check_arguments(budget, [*args, *kwargs.values()])
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            name = getattr(method, "__name__", "")
            if name == "join" and len(args) == 1 and not isinstance(args[0], list | tuple):
                args = (list(_ticking(args[0], budget)),)  # a generator: counted out first
            budget.allow(str_method_size(owner, name, args, kwargs, budget.chars), f"the result of {name}()")
        result = super().call(__context, __obj, *args, **kwargs)
        budget.check(result, "a call's result")
        return result


def _ticking(iterable: Any, budget: _Budget) -> Iterator[Any]:
    for item in iterable:
        budget.tick()
        yield item


def _bounded_iter(iterable: Any) -> Any:
    """What a ``for`` loop walks: one tick of the budget per step."""
    budget = _budget.get()
    return iterable if budget is None else _ticking(iterable, budget)


def _bounded_value(value: Any) -> Any:
    """A list, tuple or dict the template wrote, or a piece of a ``~``, weighed."""
    budget = _budget.get()
    if budget is not None:
        budget.tick()
        budget.check(value)
    return value


def filter_size(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> int:
    """How long the filters whose result can be far longer than their input can make it; else 0."""
    if name == "join":
        separator = args[0] if args else kwargs.get("d", "")
        return _joined_size(str(separator), value, limit) if isinstance(value, list | tuple) else 0
    if not isinstance(value, str):
        return 0
    if name == "replace":
        return str_method_size(value, "replace", args, {}, limit)
    if name == "center":
        return max(len(value), args[0] if args and isinstance(args[0], int) else kwargs.get("width", 80))
    if name == "format":
        return _format_size(value, [*args, *kwargs.values()], _PRINTF_FIELD, limit)
    if name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        width = len(width) if isinstance(width, str) else width
        return len(value) + (value.count("\n") + 1) * max(0, width)
    if name == "wordwrap":
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring") or "\n"
        return len(value) * (1 + len(wrap))
    return 0


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a filter) under the budget: ticks, argument and result checks, size worked out first."""
    skip = 0 if getattr(func, "jinja_pass_arg", None) is None else 1  # context, eval context or environment

    @functools.wraps(func)  # keeps the pass_context/pass_environment mark
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget.get()
        if budget is None:
            return func(*args, **kwargs)
        budget.tick()
        value, rest = (args[skip], args[skip + 1:]) if len(args) > skip else (None, ())
        if rest or kwargs:
            _check_arguments(budget, [*rest, *kwargs.values()])
        budget.check(value, f"the input of |{name}")
        if name == "join" and value is not None and not isinstance(value, str | list | tuple):
            value = list(_ticking(value, budget))
            args = (*args[:skip], value, *rest)
        budget.allow(filter_size(name, value, rest, kwargs, budget.chars), f"the result of |{name}")
        result = func(*args, **kwargs)
        budget.check(result, f"the result of |{name}")
        return result

    return bounded


def _filtered(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _AddChecks(NodeTransformer):
    """Rewrites a parsed template so that loops, ``~`` and written lists, tuples and dicts pass
    through the budget (the sandbox's own hooks cover calls, attributes and operators)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filtered(node.iter, "__smoltui_iter")
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_filtered(part, "__smoltui_value") for part in node.nodes]
        return _filtered(node, "__smoltui_value")

    def _weighed(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return _filtered(node, "__smoltui_value")

    visit_List = visit_Dict = _weighed

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        return self._weighed(node) if node.ctx == "load" else self.generic_visit(node)


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` value, weighed before it is turned into text."""
    budget = _budget.get()
    if budget is not None:
        budget.check(value, "an output")
    return value


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
        origin: str | None = None,
        time_limit: float = RENDER_SECONDS,
        size_limit: int = MAX_RENDER_CHARS,
    ) -> None:
        """``source`` is the template's text; ``origin`` where it came from (the model file's name),
        for messages; a render stops after ``time_limit`` seconds or past ``size_limit`` characters
        (plus four times the conversation's own size)."""
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.origin = origin
        self.time_limit = time_limit
        self.size_limit = size_limit
        clock = now or datetime.now
        if len(source) > MAX_TEMPLATE_CHARS:
            raise ModelError(f"{self._subject} is invalid: it is {len(source):,} characters long "
                             f"({MAX_TEMPLATE_CHARS:,} at most)")
        env = _BoundedSandbox(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_GenerationExtension, "jinja2.ext.loopcontrols"],
            finalize=_finalize,
        )
        env.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs; no chat template uses it
        env.filters["tojson"] = _tojson
        env.filters = {name: _bounded_filter(name, func) for name, func in env.filters.items()}
        env.filters["__smoltui_iter"] = _bounded_iter
        env.filters["__smoltui_value"] = _bounded_value
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: clock().strftime(fmt)
        # Jinja works out filters of constants while it compiles (``'x'|center(10**10)``): under a budget.
        token = _budget.set(_Budget(time_limit, size_limit))
        try:
            self._template = env.from_string(_AddChecks().visit(env.parse(source)))
        except jinja2.TemplateError as error:
            raise ModelError(f"{self._subject} is invalid: {error}") from error
        except (RecursionError, MemoryError) as error:  # nested past what Python's compiler takes
            raise ModelError(f"{self._subject} is invalid: it nests too deeply ({type(error).__name__})") from None
        finally:
            _budget.reset(token)

    @property
    def _subject(self) -> str:
        return f"the chat template of {self.origin}" if self.origin else "the model's chat template"

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
        token = _budget.set(None)
        try:
            budget = _Budget(self.time_limit, self.size_limit + 4 * value_size(context, math.inf))
            _budget.set(budget)
            pieces: list[str] = []
            written = 0
            for piece in self._template.generate(**context):
                written += len(piece)
                budget.allow(written, "a prompt")
                budget.tick()
                pieces.append(piece)
            return "".join(pieces)
        except _Refused as refusal:
            where = f" of {self.origin}" if self.origin else ""
            raise ModelError(f"the chat template{where} refused the conversation: {refusal}") from None
        except BudgetExceeded as overrun:
            raise ModelError(f"{self._subject} was stopped: it {overrun}") from None
        except MemoryError:
            raise ModelError(f"{self._subject} was stopped: it ran out of memory") from None
        except RecursionError:
            raise ModelError(f"{self._subject} was stopped: its calls nested too deeply "
                             "(a macro that calls itself without end?)") from None
        # The template is foreign code: whatever it raises (TypeError from "a" + 1, too) is its failure.
        except Exception as error:
            raise ModelError(f"{self._subject} failed to render: {error}") from error
        finally:
            _budget.reset(token)
