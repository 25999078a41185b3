"""Chat templates render exactly what the model was trained on, and a hostile template cannot escape."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import jinja2.sandbox
import pytest

from smoltui.backends.base import ChatMessage
from smoltui.backends.chat_template import CHATML_TEMPLATE, ChatTemplate
from smoltui.backends.think_parser import ThinkParser
from smoltui.errors import ModelError

# The project lives at <root>/main and the shared reference files at <root>/shared (CI places shared/
# beside its clone the same way).
SMOLLM3_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "smollm3"
FIXTURES = Path(__file__).parent / "fixtures"

CLOCK = datetime(2026, 3, 7, 9, 30)
TODAY = "07 March 2026"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

S = ChatMessage("system", "You are terse.")
U1 = ChatMessage("user", "Hi")
A1 = ChatMessage("assistant", "Hello!", thinking="The user greets me.")
U2 = ChatMessage("user", "Bye")


def header(mode: str, instructions: str, *, today: str = TODAY) -> str:
    """SmolLM3's system header; note it has no <|im_end|> unless tools are offered."""
    return (
        "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\n"
        f"Today Date: {today}\nReasoning Mode: {mode}\n\n## Custom Instructions\n\n{instructions}\n\n"
    )


@pytest.fixture(scope="module")
def smollm3_source() -> str:
    path = SMOLLM3_DIR / "chat_template.jinja"
    if not path.is_file():
        pytest.skip(
            f"SmolLM3 reference files not found at {SMOLLM3_DIR} (shared/ must sit beside the project)"
        )
    return path.read_text(encoding="utf-8")


@pytest.fixture()
def smollm3(smollm3_source: str) -> ChatTemplate:
    return ChatTemplate(smollm3_source, eos_token="<|im_end|>", now=lambda: CLOCK)


# ── SmolLM3 ────────────────────────────────────────────────────────────────────────────────────────


def test_smollm3_think_mode_reinserts_past_thinking(smollm3: ChatTemplate) -> None:
    assert smollm3.render([S, U1, A1, U2], think=True) == (
        header("/think", "You are terse.")
        + "<|im_start|>user\nHi<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\nThe user greets me.\n</think>\nHello!<|im_end|>\n"
        + "<|im_start|>user\nBye<|im_end|>\n"
        + "<|im_start|>assistant\n"
    )


def test_smollm3_no_think_mode_drops_thinking_and_writes_empty_blocks(smollm3: ChatTemplate) -> None:
    assert smollm3.render([S, U1, A1, U2], think=False) == (
        header("/no_think", "You are terse.")
        + "<|im_start|>user\nHi<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\n\n</think>\nHello!<|im_end|>\n"
        + "<|im_start|>user\nBye<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\n\n</think>\n"
    )


def test_smollm3_default_system_prompt_depends_on_mode(smollm3: ChatTemplate) -> None:
    think = smollm3.render([U1], think=True)
    assert think.startswith(
        header("/think", "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role")[
            :-2
        ]
    )
    assert think.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")

    assert smollm3.render([U1], think=False) == (
        header("/no_think", "You are a helpful AI assistant named SmolLM, trained by Hugging Face.")
        + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n"
    )


def test_smollm3_think_none_keeps_the_templates_default(smollm3: ChatTemplate) -> None:
    rendered = smollm3.render([U1, A1, U2])
    assert "Reasoning Mode: /think\n" in rendered
    # think=None is not "think mode" for us: past reasoning is not re-inserted.
    assert "The user greets me." not in rendered


def test_smollm3_flag_in_system_message_overrides_the_switch(smollm3: ChatTemplate) -> None:
    rendered = smollm3.render([ChatMessage("system", "Be brief. /no_think"), U1], think=True)
    assert rendered == header("/no_think", "Be brief.") + (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n"
    )


def test_smollm3_system_override_replaces_the_whole_header(smollm3: ChatTemplate) -> None:
    system = ChatMessage("system", "You are a pirate.\n/system_override")
    assert smollm3.render([system, U1], think=True) == (
        "<|im_start|>system\nYou are a pirate.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert smollm3.render([system, U1], think=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n")


def test_smollm3_tools_block_and_tool_result_as_user_turn(smollm3: ChatTemplate) -> None:
    messages = [
        U1,
        ChatMessage(
            "assistant", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        ),
        ChatMessage("tool", "18C, sunny"),
    ]
    rendered = smollm3.render(messages, think=False, tools=[WEATHER_TOOL])
    # The template writes each tool with Jinja's `string` filter: a Python repr, not JSON, exactly as
    # transformers renders it (and as the model was trained).
    tool_repr = (
        "{'type': 'function', 'function': {'name': 'get_weather', 'description': 'Current weather for a city', "
        "'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}}"
    )
    assert rendered == (
        header("/no_think", "You are a helpful AI assistant named SmolLM, trained by Hugging Face.")
        + "### Tools\n\nYou may call one or more functions to assist with the user query.\n"
        + "You are provided with function signatures within <tools></tools> XML tags:\n\n"
        + f"<tools>\n{tool_repr}\n</tools>\n\n"
        + "For each function call, return a json object with function name and arguments within "
        + "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        + '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n<|im_end|>\n'
        + "<|im_start|>user\nHi<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\n\n</think>\n<tool_call>\n"
        + '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        + "<|im_start|>user\n18C, sunny<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\n\n</think>\n"
    )


def test_smollm3_date_comes_from_the_clock(smollm3_source: str) -> None:
    new_year = ChatTemplate(smollm3_source, now=lambda: datetime(2027, 1, 1))
    assert "Today Date: 01 January 2027\n" in new_year.render([U1], think=False)


def test_smollm3_supports_thinking(smollm3: ChatTemplate) -> None:
    assert smollm3.supports_thinking
    assert not ChatTemplate(CHATML_TEMPLATE).supports_thinking


@pytest.mark.parametrize("think", [True, False])
def test_smollm3_generated_turn_rerenders_identically(smollm3: ChatTemplate, think: bool) -> None:
    """Prompt + what the model wrote == the next render's history: the KV cache stays reusable."""
    history = [S, U1]
    prompt = smollm3.render(history, think=think)
    generated = "<think>\nSay hi back.\n</think>\nHello!" if think else "Hello!"

    parser = ThinkParser()
    for char in generated:
        parser.feed(char)
    parser.flush()
    reply = ChatMessage("assistant", parser.text, thinking=parser.thinking if parser.has_thinking else None)

    rerendered = smollm3.render([*history, reply, U2], think=think)
    assert rerendered.startswith(prompt + generated + "<|im_end|>\n")


def test_smollm3_system_prefix_with_system_message(smollm3: ChatTemplate) -> None:
    messages = [S, U1, A1, U2]
    for think in (True, False):
        prefix = smollm3.system_prefix(messages, think=think)
        assert prefix == header("/think" if think else "/no_think", "You are terse.")
        assert smollm3.render(messages, think=think).startswith(prefix)


def test_smollm3_system_prefix_with_tools_ends_the_system_turn(smollm3: ChatTemplate) -> None:
    prefix = smollm3.system_prefix([S, U1], think=False, tools=[WEATHER_TOOL])
    assert "You are terse.\n\n### Tools" in prefix
    assert prefix.endswith("</tool_call>\n\n<|im_end|>\n")
    assert smollm3.render([S, U1], think=False, tools=[WEATHER_TOOL]).startswith(prefix)


def test_smollm3_system_prefix_without_system_message(smollm3: ChatTemplate) -> None:
    # An empty conversation does not render (`messages[0].role` on an empty list), so the prefix runs
    # up to the first message's content: the default header and the user turn's opening.
    prefix = smollm3.system_prefix([U1, A1, U2], think=False)
    assert prefix == (
        header("/no_think", "You are a helpful AI assistant named SmolLM, trained by Hugging Face.")
        + "<|im_start|>user\n"
    )
    assert smollm3.render([U1, A1, U2], think=False).startswith(prefix)


def test_system_prefix_is_empty_when_the_clock_moves_between_renders(smollm3_source: str) -> None:
    ticks = iter([datetime(2026, 3, 7, 23, 59), datetime(2026, 3, 8, 0, 0)])
    template = ChatTemplate(smollm3_source, now=lambda: next(ticks))
    assert template.system_prefix([S, U1], think=False) == ""


# ── ChatML (SmolLM2) ───────────────────────────────────────────────────────────────────────────────


def test_chatml_constant_is_smollm2s_template() -> None:
    # The fixture is the template string read from SmolLM2-135M-Instruct's GGUF metadata.
    assert (FIXTURES / "chatml_template.jinja").read_text(encoding="utf-8") == CHATML_TEMPLATE


def test_chatml_renders_a_conversation() -> None:
    template = ChatTemplate(CHATML_TEMPLATE)
    assert template.render([S, U1, A1, U2], think=True) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nThe user greets me.\n</think>\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.render([S, U1, A1, U2]) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_default_system_and_prefix() -> None:
    template = ChatTemplate(CHATML_TEMPLATE)
    default_system = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    )
    assert (
        template.render([U1], add_generation_prompt=False)
        == default_system + "<|im_start|>user\nHi<|im_end|>\n"
    )
    assert template.system_prefix([S, U1]) == "<|im_start|>system\nYou are terse.<|im_end|>\n"
    assert template.system_prefix([U1, A1, U2]) == default_system + "<|im_start|>user\n"
    assert template.system_prefix([]) == ""


# ── the environment: transformers' extensions, errors, sandbox ───────────────────────────────────


def test_transformers_extensions_render() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}"
        "{{ strftime_now('%Y-%m-%d') }}{{ eos_token }}"
    )
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>", now=lambda: CLOCK)
    assert template.render([U1, U2, S]) == "<s>[Hi][Bye]2026-03-07</s>"


def test_tojson_matches_transformers() -> None:
    value = {"b": "é <b> & 'q'", "a": [1, 2]}
    template = ChatTemplate(
        "{{ tools[0] | tojson }}|{{ tools[0] | tojson(indent=2, sort_keys=true) }}|"
        "{{ tools[0] | tojson(separators=(',', ':')) }}"
    )
    assert template.render([], tools=[value], add_generation_prompt=False) == (
        '{"b": "é <b> & \'q\'", "a": [1, 2]}|'
        '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "é <b> & \'q\'"\n}|'
        '{"b":"é <b> & \'q\'","a":[1,2]}'
    )


def test_raise_exception_becomes_a_model_error() -> None:
    template = ChatTemplate(
        "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok"
    )
    assert template.render([U1]) == "ok"
    with pytest.raises(
        ModelError, match="^the chat template refused the conversation: System role not supported$"
    ):
        template.render([S, U1])


def test_invalid_template_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="^the model's chat template is invalid: "):
        ChatTemplate("{% for m in messages %}{{ m.content }}")


def test_render_time_error_is_a_model_error() -> None:
    template = ChatTemplate("{{ messages[0].role }}")
    with pytest.raises(ModelError, match="^the model's chat template failed to render: "):
        template.render([])


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}",
        "{{ messages.append(1) }}",
    ],
)
def test_sandbox_refuses_unsafe_access(source: str) -> None:
    template = ChatTemplate(source)
    with pytest.raises(ModelError) as caught:
        template.render([U1])
    assert isinstance(caught.value.__cause__, jinja2.sandbox.SecurityError)
    assert "is unsafe" in str(caught.value)
    assert "pwned" not in str(caught.value)
