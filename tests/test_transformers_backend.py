"""The transformers backend on CPU, driving a tiny random SmolLM3 built by transformers itself.

Random weights say nothing sensible, but they are deterministic: greedy replies can be compared
between a backend that reused its KV cache and one that started cold, between the eager, static-cache
and compiled decode paths. The tokenizer is byte-level without merges, so a reply re-tokenizes to the
exact tokens it was generated as.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from smoltui.backends.base import (  # noqa: E402
    Backend,
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    GenerationStats,
    TextDelta,
    ThinkingDelta,
)
from smoltui.backends.transformers_backend import TransformersBackend, TransformersSettings  # noqa: E402
from smoltui.errors import BackendError, ModelError  # noqa: E402
from tests.tiny_smollm3 import SMOLLM3_TEMPLATE, build_model_folder, gpu_like_static_cache  # noqa: E402

pytestmark = pytest.mark.transformers

GREEDY = GenerationParams(max_tokens=24, temperature=0.0)
FIRST = [ChatMessage("system", "You are terse."), ChatMessage("user", "Tell me about lighthouses.")]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return build_model_folder(tmp_path_factory.mktemp("tiny-smollm3"))


async def load(folder: Path, *, mode: str | None = None, **settings) -> TransformersBackend:  # noqa: ANN003
    backend = TransformersBackend(str(folder), TransformersSettings(max_context=1024, **settings))
    backend.decode_mode = mode  # type: ignore[assignment]
    await backend.load()
    return backend


@pytest.fixture
async def backend(tiny_model: Path):
    loaded = await load(tiny_model)
    yield loaded
    await loaded.close()


async def reply(
    backend: TransformersBackend,
    messages: list[ChatMessage],
    params: GenerationParams = GREEDY,
    cancel_after: int | None = None,
) -> tuple[list, GenerationStats]:
    cancel = CancelToken()
    events = []
    async for event in backend.stream(messages, params, cancel):
        events.append(event)
        if cancel_after is not None and len(events) >= cancel_after:
            cancel.cancel()
    assert isinstance(events[-1], Finished)
    assert not any(isinstance(e, Finished) for e in events[:-1])
    return events[:-1], events[-1].stats


def text_of(deltas: list) -> str:
    return "".join(d.text for d in deltas if isinstance(d, TextDelta))


def thinking_of(deltas: list) -> str:
    return "".join(d.text for d in deltas if isinstance(d, ThinkingDelta))


async def test_streams_deltas_then_one_finished_with_real_stats(backend: TransformersBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name == "transformers" and backend.model_name.startswith("tiny-smollm3")
    deltas, stats = await reply(backend, FIRST)
    assert deltas and all(d.text for d in deltas)
    assert stats.prompt_tokens == await backend.count_tokens(FIRST, GREEDY)
    assert 0 < stats.completion_tokens <= GREEDY.max_tokens
    assert stats.stop_reason == ("length" if stats.completion_tokens == GREEDY.max_tokens else "stop")
    assert stats.cached_tokens == 0
    assert stats.ttft_s > 0 and stats.prefill_tok_s > 0 and stats.decode_tok_s > 0
    assert stats.context_used == stats.prompt_tokens + stats.completion_tokens
    assert stats.context_size == backend.context_size == 1024
    assert stats.total_s >= stats.ttft_s


async def test_second_turn_reuses_the_cache_and_replies_like_a_cold_backend(tiny_model: Path) -> None:
    warm = await load(tiny_model)
    cold = await load(tiny_model)
    try:
        first_deltas, first = await reply(warm, FIRST)
        follow_up = [
            *FIRST,
            ChatMessage("assistant", text_of(first_deltas), thinking=thinking_of(first_deltas) or None),
            ChatMessage("user", "And windmills?"),
        ]
        warm_deltas, second = await reply(warm, follow_up)
        cold_deltas, cold_stats = await reply(cold, follow_up)
    finally:
        await warm.close()
        await cold.close()
    assert second.cached_tokens >= first.prompt_tokens - 1  # at least the whole first prompt
    assert second.new_prompt_tokens < second.prompt_tokens / 2
    assert cold_stats.cached_tokens == 0
    if "\ufffd" in text_of(first_deltas):
        # A random model can write bytes that are not UTF-8 (with ChatML's template, where the
        # SmolLM3 reference files are absent): the text holds U+FFFD, which re-tokenizes longer,
        # while the warm backend keeps the tokens it generated (by design). Only the cold prompt grows.
        assert second.prompt_tokens < cold_stats.prompt_tokens
        return
    assert second.prompt_tokens == cold_stats.prompt_tokens
    assert warm_deltas == cold_deltas
    assert second.completion_tokens == cold_stats.completion_tokens


async def test_a_changed_history_crops_the_cache_and_stays_correct(tiny_model: Path) -> None:
    warm = await load(tiny_model)
    cold = await load(tiny_model)
    try:
        await reply(warm, FIRST)
        edited = [FIRST[0], ChatMessage("user", "Tell me about windmills.")]  # diverges mid-prompt
        warm_deltas, stats = await reply(warm, edited)
        cold_deltas, _ = await reply(cold, edited)
    finally:
        await warm.close()
        await cold.close()
    assert 0 < stats.cached_tokens < stats.prompt_tokens
    assert warm_deltas == cold_deltas


async def test_thinking_is_split_from_the_answer(backend: TransformersBackend, monkeypatch) -> None:  # noqa: ANN001
    tokenizer = backend._tokenizer
    script = tokenizer.encode(
        "<think>\nThe user wants a word.\n</think>\nLighthouse.", add_special_tokens=False
    )
    script.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    fed = iter(script)
    # The model's forward passes all run; only the choice of token is scripted.
    monkeypatch.setattr(backend, "_sample", lambda *args: next(fed))
    deltas, stats = await reply(backend, FIRST, GenerationParams(max_tokens=100, temperature=0.0, think=True))
    assert thinking_of(deltas) == "The user wants a word."
    assert text_of(deltas) == "Lighthouse."
    assert stats.stop_reason == "stop"
    assert stats.completion_tokens == len(script) - 1  # the end-of-turn token is not part of the reply


async def test_cancel_mid_stream_stops_quickly(backend: TransformersBackend, monkeypatch) -> None:  # noqa: ANN001
    import torch

    # Random weights may end a reply after a token or two: here the model cannot end it, only cancelling can.
    ends = torch.tensor(backend._tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))
    real = backend._sample
    monkeypatch.setattr(backend, "_sample", lambda logits, *args: real(logits.index_fill(0, ends, -float("inf")), *args))
    params = GenerationParams(max_tokens=400, temperature=0.0)
    started = time.perf_counter()
    _, stats = await reply(backend, FIRST, params, cancel_after=2)
    assert stats.stop_reason == "cancelled"
    assert stats.completion_tokens <= 12  # a held-back partial character can delay a delta by a token
    assert time.perf_counter() - started < 5
    # The cache is consistent afterwards: the same prompt replies again, from the cache.
    _, again = await reply(backend, FIRST, GenerationParams(max_tokens=3, temperature=0.0))
    assert again.stop_reason in ("length", "stop") and again.cached_tokens >= stats.prompt_tokens - 1


async def test_stopping_the_consumer_early_frees_the_worker(backend: TransformersBackend) -> None:
    stream = backend.stream(FIRST, GenerationParams(max_tokens=400, temperature=0.0), CancelToken())
    async for _ in stream:
        break
    await stream.aclose()
    _, stats = await reply(backend, FIRST, GenerationParams(max_tokens=2, temperature=0.0))
    assert stats.completion_tokens <= 2


async def test_sampling_with_a_seed_is_reproducible(backend: TransformersBackend) -> None:
    params = GenerationParams(max_tokens=16, temperature=0.9, top_p=0.9, top_k=20, repeat_penalty=1.2, seed=5)
    a, _ = await reply(backend, FIRST, params)
    b, _ = await reply(backend, FIRST, params)
    c, _ = await reply(backend, FIRST, GenerationParams(max_tokens=16, temperature=0.9, seed=6))
    assert a == b
    assert a != c


async def test_json_schema_and_tools_are_accepted(backend: TransformersBackend) -> None:
    tool = {
        "type": "function",
        "function": {"name": "now", "description": "Time", "parameters": {"type": "object"}},
    }
    params = GenerationParams(max_tokens=4, temperature=0.0, tools=[tool], json_schema={"type": "object"})
    _, stats = await reply(backend, FIRST, params)
    assert stats.completion_tokens > 0


async def test_static_cache_path_replies_like_the_dynamic_one(tiny_model: Path) -> None:
    dynamic = await load(tiny_model)
    static = await load(tiny_model, mode="static")
    try:
        assert static.session.static and not dynamic.session.static
        results = []
        for backend in (dynamic, static):
            first_deltas, _ = await reply(backend, FIRST)
            follow_up = [
                *FIRST,
                ChatMessage("assistant", text_of(first_deltas)),
                ChatMessage("user", "More."),
            ]
            second_deltas, stats = await reply(backend, follow_up)
            results.append((first_deltas, second_deltas, stats.cached_tokens))
    finally:
        await dynamic.close()
        await static.close()
    assert results[0] == results[1]


async def test_compile_setting_compiles_the_decode_step_once(tiny_model: Path, monkeypatch) -> None:  # noqa: ANN001
    import torch

    calls = []
    real_compile = torch.compile

    def tracing_compile(fn, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(kwargs)
        # dynamo traces the step as for inductor; the eager backend skips C++ codegen (tens of
        # seconds on two cores). test_inductor_compile covers the real thing.
        return real_compile(fn, **{**kwargs, "backend": "eager", "mode": None})

    monkeypatch.setattr(torch, "compile", tracing_compile)
    fast = await load(tiny_model, compile=True)
    reference = await load(tiny_model)
    try:
        assert fast.decode_mode == "compile" and fast.session.static
        for _ in range(2):  # two replies, one compile
            fast_deltas, fast_stats = await reply(fast, FIRST)
            ref_deltas, _ = await reply(reference, FIRST)
            assert fast_deltas == ref_deltas
    finally:
        await fast.close()
        await reference.close()
    assert len(calls) == 1
    assert fast_stats.cached_tokens >= fast_stats.prompt_tokens - 1


async def test_static_path_with_inference_tensors_survives_replies_and_a_reset(tiny_model: Path) -> None:
    """On a GPU the static cache's counters are inference tensors; the second reply used to fail on them."""

    with gpu_like_static_cache():
        static = await load(tiny_model, mode="static")
        dynamic = await load(tiny_model)
        try:
            runs = []
            for backend in (dynamic, static):
                first_deltas, _ = await reply(backend, FIRST)
                follow_up = [
                    *FIRST,
                    ChatMessage("assistant", text_of(first_deltas)),
                    ChatMessage("user", "More."),
                ]
                second_deltas, stats = await reply(backend, follow_up)  # crops the cache back: _set_length
                backend.session.reset()
                third_deltas, third = await reply(backend, FIRST)  # from an empty cache again
                runs.append(
                    (first_deltas, second_deltas, stats.cached_tokens, third_deltas, third.cached_tokens)
                )
            counters = [layer.cumulative_length for layer in static.session._cache.layers]
        finally:
            await static.close()
            await dynamic.close()
    assert all(c.is_inference() for c in counters)  # the GPU's situation, really reproduced
    assert runs[0] == runs[1]
    assert runs[1][2] > 0 and runs[1][4] == 0
    assert runs[1][3] == runs[1][0]


@pytest.mark.parametrize("mode", ["dynamic", "static", "compile"])
def test_decode_session_repeats_like_the_benchmark(tiny_model: Path, mode: str, monkeypatch) -> None:  # noqa: ANN001
    """The benchmark's call sequence: warm-up, timed repeats, each from reset() outside inference mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from smoltui.backends.transformers_decode import DecodeSession, Sampling, sample

    if mode == "compile":
        real_compile = torch.compile
        monkeypatch.setattr(
            torch,
            "compile",
            lambda fn, **kw: real_compile(fn, **{**kw, "backend": "eager", "mode": None}),  # noqa: ANN001, ANN003
        )
    greedy = Sampling(temperature=0.0)
    prompt = list(range(40, 90))
    with gpu_like_static_cache():
        model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
        session = DecodeSession(model, mode=mode, max_context=256)  # type: ignore[arg-type]
        replies = []
        for _ in range(3):
            assert not torch.is_inference_mode_enabled()
            session.reset()
            token = sample(session.prefill(prompt), greedy, prompt, None)
            history = [*prompt, token]
            for _ in range(12):
                token = sample(session.step(token), greedy, history, None)
                history.append(token)
            replies.append(history[len(prompt) :])
        assert session.reuse(prompt) == len(prompt) - 1  # a crop back, outside inference mode too
        assert len(session.tokens) == len(prompt) - 1
    assert replies[0] == replies[1] == replies[2]


def test_greedy_sampling_picks_what_the_float_argmax_picks() -> None:
    import torch

    from smoltui.backends.transformers_decode import Sampling, sample

    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        logits = torch.randn(1000, generator=generator).to(torch.bfloat16)
        expected = int(torch.argmax(logits.float()).item())
        assert sample(logits, Sampling(temperature=0.0), [], None) == expected
        assert sample(logits, Sampling(temperature=0.0, repeat_penalty=1.0), [5, 6], None) == expected


def test_attention_leaves_out_cudnn_only_on_cuda() -> None:
    import contextlib

    import torch

    from smoltui.backends.transformers_decode import DecodeSession

    class Stub(torch.nn.Module):
        config = None

        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(4, 2)

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.embed

    session = DecodeSession.__new__(DecodeSession)
    session.cudnn_attention = False
    session.device = torch.device("cpu")
    assert isinstance(session._attention(), contextlib.nullcontext)
    session.device = torch.device("cuda", 0)
    with session._attention():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
    session.cudnn_attention = True
    assert isinstance(session._attention(), contextlib.nullcontext)


@pytest.mark.slow
async def test_inductor_compile(tiny_model: Path) -> None:
    fast = await load(tiny_model, compile=True)
    reference = await load(tiny_model)
    try:
        fast_deltas, _ = await reply(fast, FIRST, GenerationParams(max_tokens=8, temperature=0.0))
        ref_deltas, _ = await reply(reference, FIRST, GenerationParams(max_tokens=8, temperature=0.0))
        compile_s = fast.session.compile_s
        started = time.perf_counter()
        again, _ = await reply(fast, FIRST, GenerationParams(max_tokens=8, temperature=0.0))
        second_s = time.perf_counter() - started
    finally:
        await fast.close()
        await reference.close()
    assert fast_deltas == ref_deltas == again
    assert compile_s > 0
    assert second_s < min(5, compile_s)  # the second reply did not compile again


async def test_prompt_longer_than_the_context_is_a_clear_error(tiny_model: Path) -> None:
    backend = await load(tiny_model)
    try:
        with pytest.raises(BackendError, match="context holds 1024"):
            await reply(backend, [ChatMessage("user", "lighthouse " * 200)])
    finally:
        await backend.close()


async def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    backend = TransformersBackend(str(tmp_path / "nowhere"), TransformersSettings())
    with pytest.raises(ModelError, match="model folder not found"):
        await backend.load()
    (tmp_path / "empty").mkdir()
    backend = TransformersBackend(str(tmp_path / "empty"), TransformersSettings())
    with pytest.raises(ModelError, match="no config.json"):
        await backend.load()


async def test_quantization_without_cuda_is_a_clear_error(tiny_model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for quantization in ("nf4", "int8"):
        backend = TransformersBackend(str(tiny_model), TransformersSettings(quantization=quantization))
        with pytest.raises(ModelError, match="CUDA GPUs only.*quantization to none"):
            await backend.load()


async def test_smollm3_template_renders_the_reasoning_mode(backend: TransformersBackend) -> None:
    if not SMOLLM3_TEMPLATE.is_file():
        pytest.skip(f"SmolLM3 reference files not found at {SMOLLM3_TEMPLATE.parent}")
    think = backend.render(FIRST, GenerationParams(think=True))
    no_think = backend.render(FIRST, GenerationParams(think=False))
    assert "Reasoning Mode: /think" in think and "Reasoning Mode: /no_think" in no_think
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n")


def test_importing_the_backend_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, smoltui.backends.transformers_backend, smoltui.backends.transformers_decode;"
        "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_settings_become_from_pretrained_arguments(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import torch

    from smoltui.backends.transformers_loading import load_kwargs

    cpu = load_kwargs(TransformersSettings())
    assert cpu == {"dtype": torch.float32}  # CPU: fp32, no device map, nothing to dispatch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    offload = tmp_path / "offload"
    gpu = load_kwargs(
        TransformersSettings(max_memory={"0": "20GiB", "cpu": "64GiB"}, offload_folder=str(offload))
    )
    assert gpu == {
        "dtype": torch.bfloat16,
        "device_map": "auto",
        "max_memory": {0: "20GiB", "cpu": "64GiB"},
        "offload_folder": str(offload),
    }
    assert offload.is_dir()
    assert load_kwargs(TransformersSettings(dtype="float16", device_map=None)) == {"dtype": torch.float16}


def test_out_of_memory_names_the_settings_to_change() -> None:
    from smoltui.backends.transformers_loading import out_of_memory_message

    message = out_of_memory_message(TransformersSettings(), "loading the model")
    assert message.startswith("out of GPU memory while loading the model")
    assert 'quantization = "nf4"' in message and "max_memory" in message and "max_context" in message


def test_fast_path_choice(monkeypatch) -> None:  # noqa: ANN001
    import torch

    from smoltui.backends.transformers_backend import decode_mode_for

    class Model:
        hf_device_map: dict = {}
        is_quantized = False

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert decode_mode_for(TransformersSettings(), Model()) == "dynamic"
    assert decode_mode_for(TransformersSettings(compile=True), Model()) == "compile"
    # torch.compile breaks its graph at each bitsandbytes layer: replay a captured CUDA graph instead.
    assert decode_mode_for(TransformersSettings(compile=True, quantization="nf4"), Model()) == "cuda_graph"
    split = Model()
    split.hf_device_map = {"model.layers.0": 0, "model.layers.1": "cpu"}
    assert decode_mode_for(TransformersSettings(compile=True), split) == "dynamic"
