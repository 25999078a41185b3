"""The whole stack at once: the Textual app, the chat service, SQLite and real llama.cpp inference."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui.harness import SIZE, build_app, ready, send, store_fixture  # noqa: F401

from smoltui.backends.base import GenerationParams
from smoltui.orchestrator.store import Store

pytestmark = pytest.mark.llama


async def test_two_turns_with_the_bundled_model_in_the_app(store: Store, tmp_path: Path, bundled_model: Path) -> None:
    pytest.importorskip("llama_cpp")
    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    backend = LlamaCppBackend(bundled_model, LlamaSettings(n_ctx=1024, n_threads=1, prompt_cache_dir=tmp_path / "states"),
                              model_name="SmolLM2-135M-Instruct (bundled)")
    app = build_app(store, backend, tmp_path)
    app.core.chat.settings.params = GenerationParams(max_tokens=16, temperature=0.0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert "SmolLM2-135M" in screen.status.model_name and screen.status.backend_name == "llama.cpp"
        first = await send(pilot, "What is the capital of France?", timeout=60)
        assert first.markdown.strip()
        second = await send(pilot, "And of Italy?", timeout=60)
        assert second.markdown.strip()
        rows = await store.messages(screen.session_id)
        assert [m.role for m in rows] == ["user", "assistant", "user", "assistant"]
        assert rows[1].content == first.markdown and rows[3].content == second.markdown
        # The second reply reused everything the first turn left in the KV cache.
        assert rows[3].stats["cached_tokens"] >= rows[1].stats["prompt_tokens"]
        # The status bar shows this reply's speed and how full the context is.
        assert screen.status.tok_s == pytest.approx(rows[3].stats["decode_tok_s"], abs=0.01)
        assert screen.status.context_size == 1024
        assert screen.status.context_used == rows[3].stats["context_used"]
