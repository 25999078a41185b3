"""A chat template that loops, recurses or explodes is stopped within seconds, with a ModelError that
names the model file; ordinary templates and long conversations render as before."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from smoltui.backends.base import ChatMessage
from smoltui.backends.chat_template import (
    CHATML_TEMPLATE,
    MAX_RENDER_CHARS,
    MAX_TEMPLATE_CHARS,
    RENDER_SECONDS,
    ChatTemplate,
)
from smoltui.errors import ModelError

HI = [ChatMessage("user", "hi")]
ORIGIN = "hostile-Q4_K_M.gguf"

# Templates that would run for hours (given a deadline of 1 s here).
ENDLESS = {
    "two nested long loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "loops over a stored list": "{% set r = range(100000)|list %}{% for a in r %}{% for b in r %}{% endfor %}"
                                "{% endfor %}",
    "a macro that calls itself twice": "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
                                       "{% endmacro %}{{ f(60) }}",
    "loops inside a macro": "{% macro big() %}{% for a in range(100000) %}{% for b in range(100000) %}x"
                            "{% endfor %}{% endfor %}{% endmacro %}{{ big() }}",
}

# Templates that would write or build gigabytes (most in one step, before any deadline could help).
HUGE = {
    "gigabytes of output": "{% for a in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "a billion laughs": "{% set a = ['xxxxxxxxxx'] * 10 %}{% set b = [a,a,a,a,a,a,a,a,a,a] %}"
                        "{% set c = [b,b,b,b,b,b,b,b,b,b] %}{% set d = [c,c,c,c,c,c,c,c,c,c] %}"
                        "{% set e = [d,d,d,d,d,d,d,d,d,d] %}{% set f = [e,e,e,e,e,e,e,e,e,e] %}"
                        "{% set g = [f,f,f,f,f,f,f,f,f,f] %}{{ g }}",
    "repeated lists": "{% set a = ['x' * 1000] * 1000 %}{% set b = [a] * 1000 %}{{ b }}",
    "doubling with ~": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "doubling with +": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "ljust": "{{ 'x'.ljust(10000000000) }}",
    "replace": "{% set s = 'x' * 1000000 %}{{ s.replace('x', s) }}",
    "join": "{% set s = 'x' * 1000000 %}{{ s.join(['a'] * 100000) }}",
    "printf width": "{{ '%999999999d' % 1 }}",
    "many printf fields": "{{ ('%99999s' * 10000) % ((1,) * 10000) }}",
    "format width": "{{ '{:>999999999}'.format(1) }}",
    "format width argument": "{{ '{:>{w}}'.format(1, w=999999999) }}",
    "indent": "{% set s = '\n' * 1000000 %}{{ s|indent(99999) }}",
    "center": "{{ 'x'|center(1000000000) }}",
    "wordwrap": "{{ ('x ' * 500000)|wordwrap(1, wrapstring='y' * 100000) }}",
    "format filter": "{{ '%999999999s'|format('x') }}",
    "power": "{{ 2 ** 100000000 }}",
    "tojson indent": "{{ [[[[1]]]]|tojson(indent=100000) }}",
    "lipsum": "{{ lipsum(1000000) }}",
    "translate": "{{ ('x' * 1000000).translate({120: 'y' * 100000}) }}",
    "expandtabs": "{{ ('\t' * 1000000).expandtabs(100000) }}",
}


def _stopped(source: str, *, time_limit: float, trace: bool = False) -> tuple[str, float, int]:
    """The message, seconds and (with ``trace``) peak memory of loading ``source`` and rendering it,
    which must fail. Loading counts too: Jinja works out filters of constants while it compiles."""
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ModelError) as info:
            ChatTemplate(source, origin=ORIGIN, time_limit=time_limit).render(HI)
        return str(info.value), time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("source", ENDLESS.values(), ids=ENDLESS.keys())
def test_a_template_that_runs_on_is_stopped_at_its_deadline(source: str) -> None:
    message, elapsed, _ = _stopped(source, time_limit=1.0)
    assert message == f"the chat template of {ORIGIN} was stopped: it ran longer than 1 s"
    assert elapsed < 3.0, elapsed


@pytest.mark.parametrize("source", HUGE.values(), ids=HUGE.keys())
def test_a_template_that_explodes_is_stopped_before_it_allocates(source: str) -> None:
    message, elapsed, peak = _stopped(source, time_limit=10.0, trace=True)
    assert message.startswith(f"the chat template of {ORIGIN} was stopped: it "), message
    assert "ran longer" not in message  # refused by size, long before the deadline
    assert elapsed < 3.0, elapsed
    assert peak < 100 * 2**20, peak


def test_the_reported_template_is_stopped_within_seconds_at_the_default_limit() -> None:
    source = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"
    message, elapsed, _ = _stopped(source, time_limit=RENDER_SECONDS)
    # by the deadline, or by the size limit when 4 M "x" come sooner (a fast machine)
    assert message in (f"the chat template of {ORIGIN} was stopped: it ran longer than {RENDER_SECONDS:g} s",
                       f"the chat template of {ORIGIN} was stopped: it would build a prompt of "
                       f"{MAX_RENDER_CHARS + 361:,} characters ({MAX_RENDER_CHARS + 360:,} at most)")
    assert elapsed < RENDER_SECONDS + 3.0


def test_a_macro_that_calls_itself_forever_is_a_model_error() -> None:
    message, elapsed, _ = _stopped("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", time_limit=10.0)
    assert message.startswith(f"the chat template of {ORIGIN} was stopped: its calls nested too deeply")
    assert elapsed < 3.0


@pytest.mark.parametrize("source", [
    "x" * (MAX_TEMPLATE_CHARS + 1),
    "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
    "{% if a %}" * 3000 + "{% endif %}" * 3000,
], ids=["too long", "nested parentheses", "nested blocks"])
def test_a_template_too_long_or_too_deep_is_refused_when_loaded(source: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ModelError, match=f"^the chat template of {ORIGIN} is invalid: "):
        ChatTemplate(source, origin=ORIGIN)
    assert time.perf_counter() - started < 3.0


def test_errors_name_the_model_file() -> None:
    with pytest.raises(ModelError, match=f"^the chat template of {ORIGIN} is invalid: "):
        ChatTemplate("{% for m in messages %}", origin=ORIGIN)
    with pytest.raises(ModelError, match=f"^the chat template of {ORIGIN} failed to render: "):
        ChatTemplate("{{ messages[0].role }}", origin=ORIGIN).render([])
    with pytest.raises(ModelError, match=f"^the chat template of {ORIGIN} refused the conversation: no$"):
        ChatTemplate("{{ raise_exception('no') }}", origin=ORIGIN).render(HI)


def test_a_long_conversation_is_not_mistaken_for_an_explosion() -> None:
    """The size limit grows with the conversation: 6 MB of messages render in full."""
    messages = [ChatMessage("user" if i % 2 == 0 else "assistant", "word " * 200_000) for i in range(6)]
    prompt = ChatTemplate(CHATML_TEMPLATE, origin=ORIGIN).render(messages)
    assert len(prompt) > 6_000_000 and prompt.endswith("<|im_start|>assistant\n")


def test_ordinary_template_features_still_work() -> None:
    source = (
        "{% macro show(m) %}{{ m.role|upper }}: {{ m.content|trim }}{% endmacro %}"
        "{% set ns = namespace(n=0) %}{% for m in messages if m.role == 'user' %}{% set ns.n = ns.n + 1 %}"
        "{{ show(m) ~ ' #' ~ loop.index }}/{{ loop.length }}{{ ', ' if not loop.last }}{% else %}none"
        "{% endfor %} {{ ns.n }} {{ [1, 2]|join('-') }} {{ {'a': 1}|tojson }} {{ '%s|%5s' % ('a', 'b') }}"
        " {{ '{}+{}'.format(1, 2) }} {{ 'ab'.replace('a', 'x') }} {{ 'x' * 3 }} {{ 2 ** 10 }}"
        "{% for i in range(3) recursive %}{{ i }}{% endfor %}{{ 'a\nb'|indent(2) }}"
    )
    messages = [ChatMessage("user", " one "), ChatMessage("assistant", "two"), ChatMessage("user", "three")]
    assert ChatTemplate(source).render(messages) == (
        'USER: one #1/2, USER: three #2/2 2 1-2 {"a": 1} a|    b 1+2 xb xxx 1024012a\n  b'
    )


def test_smollm3_renders_as_before(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[3] / "shared" / "reference" / "smollm3" / "chat_template.jinja"
    if not path.is_file():
        pytest.skip("SmolLM3 reference files not found")
    template = ChatTemplate(path.read_text(encoding="utf-8"), origin=ORIGIN)
    conversation = [ChatMessage("system", "Be terse."), *[ChatMessage("user" if i % 2 == 0 else "assistant", "x")
                                                          for i in range(300)]]
    started = time.perf_counter()
    prompt = template.render(conversation, think=False)
    assert time.perf_counter() - started < 2.0
    assert prompt.count("<|im_start|>user\nx<|im_end|>") == 150
