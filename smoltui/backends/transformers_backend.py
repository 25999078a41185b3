"""The GPU backend: a transformers model folder (or hub id) in bf16/fp16, nf4 or int8.

It behaves like the llama.cpp backend: everything that touches the model runs on one worker thread;
deltas travel to the event loop through a queue; the cancel token is checked between tokens; the KV
cache is kept between turns, so a follow-up only prefills the tokens after the prefix the cache
already holds; the prompt is rendered from the model's own chat template by our sandboxed Jinja code
(:mod:`smoltui.backends.chat_template`), never by ``tokenizer.apply_chat_template``.

``settings.compile`` selects the fast path: a static cache sized ``max_context`` and a decode step
compiled once per backend (reused by every reply), or captured in a CUDA graph for bitsandbytes models
whose layers ``torch.compile`` cannot trace through (see :mod:`smoltui.backends.transformers_decode`).

Tool calls are split from the text as on llama.cpp, and held to the offered tools' schemas from the
``<tool_call>`` tag to the end of the call's JSON by a logits mask from llguidance
(:mod:`smoltui.backends.token_constraint`), applied to the logits each step hands back, so it works
the same in every decode mode; ``GenerationParams.json_schema`` holds the whole reply to a JSON schema
with the same machinery (as the llama.cpp backend's grammar does); without llguidance, calls and
replies are decoded unconstrained (one warning).

torch and transformers are imported on the worker thread when the model loads, never at import.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    GenerationParams,
    LoadProgress,
    ProgressCallback,
    StreamEvent,
)
from smoltui.backends.chat_template import CHATML_TEMPLATE, ChatTemplate
from smoltui.backends.decode_loop import Constraint, Grammar, TextDetokenizer, decode
from smoltui.backends.threaded import Emit, stream_from_thread
from smoltui.backends.token_constraint import ConstraintFactory, TokenConstraint
from smoltui.backends.transformers_decode import DecodeMode, DecodeSession, Sampling, sample
from smoltui.backends.transformers_loading import (
    TransformersSettings,
    check_source,
    load_model,
    out_of_memory_message,
)
from smoltui.errors import BackendError

__all__ = ["TransformersBackend", "TransformersSettings", "decode_mode_for"]

log = logging.getLogger(__name__)



def decode_mode_for(settings: TransformersSettings, model: Any) -> DecodeMode:
    """How decode steps run: the fast path where it can work, plain eager steps otherwise."""
    import torch

    placed = set(map(str, (getattr(model, "hf_device_map", None) or {}).values()))
    if not settings.compile or placed & {"cpu", "disk", "meta"} and len(placed) > 1:
        # A model split between GPU and RAM/disk streams weights in per layer: nothing to capture.
        return "dynamic"
    quantized = getattr(model, "is_quantized", False) or settings.quantization != "none"
    if quantized and torch.cuda.is_available():
        # torch.compile breaks its graph at every bitsandbytes layer (slower than eager); replaying a
        # captured CUDA graph runs the same kernels without the Python in between.
        return "cuda_graph"
    return "compile"


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: str, settings: TransformersSettings, *, model_name: str | None = None) -> None:
        self.model_ref = str(model)
        self.settings = settings
        self.model_name = model_name or Path(self.model_ref.rstrip("/")).name or self.model_ref
        self.template: ChatTemplate | None = None
        self.decode_mode: DecodeMode | None = None
        """Set before load() to force a decode mode (tests, benchmarks); None picks one from the settings."""
        self._model: Any = None
        self._tokenizer: Any = None
        self._session: DecodeSession | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transformers")
        self._eos: set[int] = set()
        self._bos_text = ""
        self._bos_id: int | None = None
        self._byte_level = False
        self._n_ctx = settings.max_context
        self._constraints: ConstraintFactory | None = None

    # -- loading ---------------------------------------------------------------------------------

    @property
    def context_size(self) -> int:
        return self._n_ctx

    @property
    def session(self) -> DecodeSession:
        """The decode session holding the KV cache (for benchmarks driving the decode loop directly)."""
        if self._session is None:
            raise BackendError("the model is not loaded yet")
        return self._session

    @property
    def model(self) -> Any:
        if self._model is None:
            raise BackendError("the model is not loaded yet")
        return self._model

    async def load(self, progress: ProgressCallback | None = None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load, progress or (lambda _: None))

    def _load(self, progress: ProgressCallback) -> None:
        source = check_source(self.model_ref)
        progress(LoadProgress(0.05, f"loading {self.model_name} with transformers"))
        model, tokenizer = load_model(source, self.settings)
        progress(LoadProgress(0.85, "preparing chat template"))
        self.attach(model, tokenizer)
        progress(LoadProgress(1.0, "ready"))

    def attach(self, model: Any, tokenizer: Any) -> None:
        """Use an already loaded model and tokenizer (what load() does after from_pretrained)."""
        self._model, self._tokenizer = model, tokenizer
        config = model.config
        limit = getattr(config, "max_position_embeddings", None) or self.settings.max_context
        self._n_ctx = min(self.settings.max_context, limit)
        self._eos = _eos_ids(model, tokenizer)
        self._bos_text = tokenizer.bos_token or ""
        self._bos_id = tokenizer.bos_token_id
        source = getattr(tokenizer, "chat_template", None)
        if isinstance(source, dict):  # several named templates: the default one
            source = source.get("default") or next(iter(source.values()), None)
        self.template = ChatTemplate(
            source or CHATML_TEMPLATE,
            bos_token=self._bos_text,
            eos_token=tokenizer.eos_token or "",
            origin=getattr(tokenizer, "name_or_path", None) or None,
        )
        self._byte_level = _is_byte_level(tokenizer)
        vocab = max(len(tokenizer), int(getattr(config, "vocab_size", 0) or 0))
        self._constraints = ConstraintFactory(tokenizer, vocab_size=vocab, eos_ids=self._eos)
        mode = self.decode_mode or decode_mode_for(self.settings, model)
        self._session = DecodeSession(model, mode=mode, max_context=self._n_ctx)
        self.decode_mode = mode

    async def close(self) -> None:
        def release() -> None:
            self._session = None
            self._model = None
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass

        if self._model is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, release)
        self._executor.shutdown(wait=False)

    # -- prompts ---------------------------------------------------------------------------------

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False)) if text else []

    def _tokenize(self, prompt: str) -> list[int]:
        tokens = self._encode(prompt)
        if (
            getattr(self._tokenizer, "add_bos_token", False)
            and self._bos_id is not None
            and not prompt.startswith(self._bos_text)
        ):
            tokens.insert(0, self._bos_id)
        return tokens

    def _tokenize_reusing_cache(self, prompt: str) -> list[int]:
        """Tokenize ``prompt``, keeping the cached tokens whose text starts it (see the llama.cpp backend).

        A generated reply does not always re-tokenize to the tokens it was generated as; tokenizing
        the whole history again would then throw the cache away from that reply on.
        """
        cached = self._session.tokens if self._session is not None else []
        if not self._byte_level or not cached:
            return self._tokenize(prompt)

        def fits(k: int) -> str | None:
            text = self._decode(cached[:k])
            return text if prompt.startswith(text) and not text.endswith("\ufffd") else None

        keep, text = len(cached), fits(len(cached))
        if text is None:  # binary search for the longest cached run that still starts the prompt
            low, high, text = 0, len(cached), ""
            while high - low > 1:
                mid = (low + high) // 2
                found = fits(mid)
                if found is None:
                    high = mid
                else:
                    low, text = mid, found
            keep = low
        if keep == 0:
            return self._tokenize(prompt)
        return cached[:keep] + self._encode(prompt[len(text) :])

    def render(self, messages: Sequence[ChatMessage], params: GenerationParams) -> str:
        if self.template is None:
            raise BackendError("the model is not loaded yet")
        return self.template.render(messages, think=params.think, tools=params.tools)

    def prepare(self, messages: Sequence[ChatMessage], params: GenerationParams) -> list[int]:
        return self._tokenize_reusing_cache(self.render(messages, params))

    async def count_tokens(self, messages: Sequence[ChatMessage], params: GenerationParams) -> int:
        loop = asyncio.get_running_loop()
        return len(await loop.run_in_executor(self._executor, self.prepare, messages, params))

    # -- generation ------------------------------------------------------------------------------

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, cancel: CancelToken
    ) -> AsyncIterator[StreamEvent]:
        generate = functools.partial(self._generate, messages, params, cancel)
        async for event in stream_from_thread(self._executor, generate, cancel):
            yield event

    def _generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, cancel: CancelToken, emit: Emit
    ) -> None:
        """Decode one reply with :func:`~smoltui.backends.decode_loop.decode` (phases, tool calls, stats).

        A constraint (a call's JSON, a JSON reply) is an llguidance mask applied to the logits a step
        hands back, outside any compiled or captured forward pass; without llguidance, calls and
        replies are decoded unconstrained.
        """
        import torch

        session = self.session
        started = time.perf_counter()
        prompt = self.render(messages, params)
        tokens = self._tokenize_reusing_cache(prompt)
        n_ctx = self._n_ctx
        if len(tokens) >= n_ctx:
            raise BackendError(f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}")
        cached = session.reuse(tokens)
        try:
            decode(_TorchRuntime(self, params, cancel), params, cancel, emit, prompt=tokens, cached=cached,
                   started=started, in_thinking=params.think and prompt.rstrip().endswith("<think>"))
        except BaseException as error:
            # A forward pass that failed half way leaves the cache in an unknown state.
            session.reset()
            if isinstance(error, torch.cuda.OutOfMemoryError):
                raise BackendError(out_of_memory_message(self.settings, "generating")) from None
            if isinstance(error, OverflowError):
                raise BackendError(f"the conversation no longer fits the context: {error}") from None
            raise

    def _sample(self, logits: Any, sampling: Sampling, history: list[int], generator: Any) -> int:
        return sample(logits, sampling, history, generator)


class _TorchRuntime:
    """A transformers model under the decode loop (:class:`~smoltui.backends.decode_loop.Runtime`):
    the decode session's forward passes, an llguidance mask on their logits, our sampler."""

    def __init__(self, backend: TransformersBackend, params: GenerationParams, cancel: CancelToken) -> None:
        import torch

        self._backend = backend
        self._session = backend.session
        self._cancel = cancel
        self._logits: Any = None
        self._sampling = Sampling(
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            repeat_penalty=params.repeat_penalty,
        )
        self._generator = None
        if params.seed is not None:
            self._generator = torch.Generator(device=self._session.device)
            self._generator.manual_seed(params.seed)
        self.context_size = backend.context_size
        self.end_ids = backend._eos

    def prefill(self, tokens: Sequence[int]) -> bool:
        self._logits = self._session.prefill(tokens, cancelled=lambda: self._cancel.cancelled)
        return self._logits is not None

    def step(self, token: int) -> None:
        self._logits = self._session.step(token)

    def pick(self, constraint: Constraint | None) -> int:
        logits = constraint.mask(self._logits) if isinstance(constraint, TokenConstraint) else self._logits
        # (the session's tokens are the history the repeat penalty looks back on)
        return self._backend._sample(logits, self._sampling, self._session.tokens, self._generator)

    def tokenize(self, text: str) -> list[int]:
        return self._backend._encode(text)

    def detokenizer(self) -> TextDetokenizer:
        return TextDetokenizer(self._backend._decode)

    def call_grammar(self, tools: Sequence[Mapping[str, Any]]) -> Grammar | None:
        factory = self._backend._constraints
        if factory is None or not factory.available:  # (warned once) decode unconstrained
            return None
        return functools.partial(factory.tool_call, list(tools))

    def json_grammar(self, schema: Mapping[str, Any]) -> Grammar | None:
        factory = self._backend._constraints
        if factory is None or not factory.available:
            return None
        return functools.partial(factory.json_schema, schema)

    def close(self) -> None:
        pass


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    for text in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        token = tokenizer.convert_tokens_to_ids(text)
        if isinstance(token, int) and token != getattr(tokenizer, "unk_token_id", None):
            ids.add(token)
    return ids


def _is_byte_level(tokenizer: Any) -> bool:
    """Byte-level BPE (GPT-2 style, SmolLM's): pieces tokenized apart concatenate to the same text."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return False
    try:
        spec = json.loads(backend.to_str())
    except (AttributeError, ValueError):
        return False
    return "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) and "ByteLevel" in json.dumps(
        spec.get("decoder")
    )
