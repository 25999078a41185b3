"""Real llama.cpp inference on the bundled SmolLM2-135M GGUF."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smoltui.backends.base import CancelToken, ChatMessage, Finished, GenerationParams, GenerationStats
from smoltui.errors import BackendError

pytestmark = pytest.mark.llama

GREEDY = GenerationParams(max_tokens=24, temperature=0.0, seed=7)
SYSTEM = ChatMessage(
    "system",
    "You are a concise assistant for a terminal chat app. Answer in one short sentence, "
    "prefer plain words, and never use lists unless the user asks for one. " * 2,
)


async def reply(backend, messages, params=GREEDY, cancel_after: int | None = None) -> tuple[str, GenerationStats]:  # noqa: ANN001
    cancel = CancelToken()
    text: list[str] = []
    stats = None
    async for event in backend.stream(messages, params, cancel):
        if isinstance(event, Finished):
            stats = event.stats
        else:
            text.append(event.text)
            if cancel_after is not None and len(text) >= cancel_after:
                cancel.cancel()
    assert stats is not None
    return "".join(text), stats


async def test_follow_up_pays_only_for_its_new_tokens(llama_backend) -> None:  # noqa: ANN001
    first_messages = [SYSTEM, ChatMessage("user", "What is the capital of France?")]
    first_text, first = await reply(llama_backend, first_messages)
    assert first_text.strip()
    assert first.completion_tokens > 0 and first.ttft_s > 0 and first.decode_tok_s > 0

    follow_up = [*first_messages, ChatMessage("assistant", first_text), ChatMessage("user", "And Germany?")]
    _, second = await reply(llama_backend, follow_up)
    new_message_tokens = await llama_backend.count_tokens(follow_up, GREEDY) - first.prompt_tokens - first.completion_tokens
    # Everything up to the end of the first reply came from the KV cache.
    assert second.cached_tokens >= first.prompt_tokens + first.completion_tokens - 2
    assert second.new_prompt_tokens <= new_message_tokens + 3
    assert second.prompt_tokens - second.cached_tokens < first.prompt_tokens / 3
    assert second.context_used == second.prompt_tokens + second.completion_tokens
    assert second.context_size == 2048


async def test_cancel_mid_stream_then_generate_again(llama_backend) -> None:  # noqa: ANN001
    messages = [ChatMessage("user", "Write a long story about a lighthouse keeper.")]
    text, stats = await reply(llama_backend, messages, GenerationParams(max_tokens=200, temperature=0.0), cancel_after=3)
    assert stats.stop_reason == "cancelled"
    assert stats.completion_tokens <= 4
    # The context is still consistent: the next request works and reuses the prompt.
    again, stats2 = await reply(llama_backend, messages, GenerationParams(max_tokens=5, temperature=0.0))
    assert again.strip() and stats2.stop_reason == "length"
    assert stats2.cached_tokens >= stats.prompt_tokens - 1


async def test_stopping_the_consumer_early_stops_generation(llama_backend) -> None:  # noqa: ANN001
    stream = llama_backend.stream([ChatMessage("user", "Count to one hundred.")],
                                  GenerationParams(max_tokens=300, temperature=0.0), CancelToken())
    async for _ in stream:
        break
    await stream.aclose()
    # The single llama thread is free again right away: a short request completes.
    text, _ = await asyncio.wait_for(reply(llama_backend, [ChatMessage("user", "Hi")],
                                           GenerationParams(max_tokens=3, temperature=0.0)), 60)
    assert text


async def test_prompt_longer_than_the_context_is_a_clear_error(llama_backend) -> None:  # noqa: ANN001
    huge = [ChatMessage("user", "lighthouse " * 3000)]
    with pytest.raises(BackendError, match="context holds 2048"):
        await reply(llama_backend, huge)


async def test_system_prompt_state_is_saved_and_reused_by_a_new_backend(bundled_model: Path, tmp_path: Path) -> None:
    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    settings = LlamaSettings(n_ctx=1024, n_threads=2, prompt_cache_dir=tmp_path)
    first = LlamaCppBackend(bundled_model, settings)
    await first.load()
    messages = [SYSTEM, ChatMessage("user", "Hello!")]
    _, cold = await reply(first, messages, GenerationParams(max_tokens=4, temperature=0.0))
    assert first.last_prompt_cache == "saved"
    assert cold.cached_tokens == 0
    await first.close()
    states = list(tmp_path.glob("*.kvstate"))
    assert len(states) == 1 and states[0].stat().st_size > 0

    second = LlamaCppBackend(bundled_model, settings)
    await second.load()
    prefix = second.prepare(messages, GREEDY).prefix_tokens
    assert prefix >= 32
    text, warm = await reply(second, [SYSTEM, ChatMessage("user", "Good morning!")], GenerationParams(max_tokens=4, temperature=0.0))
    assert second.last_prompt_cache == "hit"
    assert warm.cached_tokens >= prefix
    assert text
    await second.close()


async def test_unreadable_state_file_is_discarded_not_fatal(bundled_model: Path, tmp_path: Path) -> None:
    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    backend = LlamaCppBackend(bundled_model, LlamaSettings(n_ctx=1024, n_threads=2, prompt_cache_dir=tmp_path))
    await backend.load()
    messages = [SYSTEM, ChatMessage("user", "Hello!")]
    prepared = backend.prepare(messages, GREEDY)
    path = backend._state_path(prepared.tokens[: prepared.prefix_tokens])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage")
    text, stats = await reply(backend, messages, GenerationParams(max_tokens=4, temperature=0.0))
    assert text and stats.cached_tokens == 0
    assert backend.last_prompt_cache == "saved"  # replaced by a good one
    await backend.close()


async def test_generation_never_blocks_the_event_loop(llama_backend) -> None:  # noqa: ANN001
    """A ticker on the loop keeps running while a long prompt is prefilled and decoded."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - before - 0.01)

    task = asyncio.create_task(ticker())
    long_prompt = [ChatMessage("user", "Summarise this: " + "the quick brown fox jumps over the lazy dog. " * 30)]
    _, stats = await reply(llama_backend, long_prompt, GenerationParams(max_tokens=16, temperature=0.0))
    stop.set()
    await task
    assert stats.prompt_tokens > 250
    # Prefilling hundreds of tokens takes a while on two cores; the loop never waited on it.
    assert len(lags) > 20
    assert max(lags) < 0.5


async def test_cached_tokens_are_kept_even_when_the_text_would_tokenize_differently(llama_backend) -> None:  # noqa: ANN001
    """A reply the model generated as unusual tokens must not cost a re-prefill on the next turn."""
    llm = llama_backend.llama
    messages = [ChatMessage("user", "Tell me about lighthouses and their keepers.")]
    text = llama_backend.template.render(messages)
    canonical = llama_backend._tokenize(text)
    # Spell the longest-text token out character by character: same text, other tokens.
    index = max(range(len(canonical)), key=lambda i: len(llm.detokenize([canonical[i]])))
    word = llm.detokenize([canonical[index]]).decode()
    spelled = [t for ch in word for t in llm.tokenize(ch.encode(), add_bos=False, special=False)]
    assert len(spelled) > 1
    unusual = canonical[:index] + spelled + canonical[index + 1 :]
    await asyncio.get_running_loop().run_in_executor(llama_backend._executor, lambda: (llm.reset(), llm.eval(unusual)))
    follow_up = [*messages, ChatMessage("assistant", "They guide ships."), ChatMessage("user", "Thanks")]
    prepared = llama_backend.prepare(follow_up, GREEDY)
    assert prepared.tokens[: len(unusual)] == unusual
    _, stats = await reply(llama_backend, follow_up, GenerationParams(max_tokens=2, temperature=0.0))
    assert stats.cached_tokens >= len(unusual)


async def test_a_json_schema_constrains_the_reply(llama_backend) -> None:  # noqa: ANN001
    import json

    import jsonschema

    schema = {
        "type": "object",
        "properties": {"color": {"type": "string", "maxLength": 12}, "warm": {"type": "boolean"}},
        "required": ["color", "warm"],
        "additionalProperties": False,
    }
    params = GenerationParams(max_tokens=60, temperature=0.0, json_schema=schema)
    text, stats = await reply(llama_backend, [ChatMessage("user", "Name a color and say if it is warm.")], params)
    assert stats.stop_reason == "stop", text
    jsonschema.validate(json.loads(text), schema)


SCHEMA_WITH_DOLLAR = r'''
import asyncio, re
from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings
from smoltui.backends.base import CancelToken, ChatMessage, GenerationParams, TextDelta
from pathlib import Path
import sys

async def main():
    backend = LlamaCppBackend(Path(sys.argv[1]), LlamaSettings(n_ctx=512, n_threads=2, prompt_cache_dir=None))
    await backend.load()
    schema = {"type": "object", "properties": {"ref": {"type": "string", "pattern": "^\\$\\{[a-z]+\\}$"}},
              "required": ["ref"]}
    params = GenerationParams(json_schema=schema, max_tokens=24, temperature=0.0)
    text = "".join([e.text async for e in backend.stream([ChatMessage("user", "A reference?")], params,
                                                         CancelToken()) if isinstance(e, TextDelta)])
    await backend.close()
    print(text)

asyncio.run(main())
'''


@pytest.mark.llama
def test_a_dollar_in_a_schema_pattern_does_not_crash_the_process(bundled_model: Path, tmp_path: Path) -> None:
    # llama-cpp-python writes `$` as `\$`, which llama.cpp's grammar parser rejects and then segfaults
    # on: run it in a child process so a regression fails this test, not the whole test run.
    import json
    import re
    import subprocess

    from tests.conftest import PYTHON

    script = tmp_path / "dollar.py"
    script.write_text(SCHEMA_WITH_DOLLAR)
    result = subprocess.run([PYTHON, str(script), str(bundled_model)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.fullmatch(r"\$\{[a-z]+\}", json.loads(result.stdout)["ref"])
