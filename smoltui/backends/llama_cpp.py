"""The default backend: GGUF models on the CPU through llama-cpp-python.

Three things make it fast on a laptop:

* the KV cache is kept between turns: the prompt of a follow-up shares its first tokens with what the
  context already holds, and ``Llama.generate`` only evaluates the tokens after that shared prefix;
* the prefilled system prompt (SmolLM3's header plus any tool block) is saved to disk per model, so a
  new chat with the same system prompt loads it instead of prefilling it again;
* a conversation the context stops serving (another chat opened, a plan drafted, a workflow task
  run) keeps its KV state in RAM (:mod:`smoltui.backends.kv_snapshots`), and comes back from there;
  the most recent ones are written beside the system prompt states when the backend closes, so a
  long chat reopened in a later run does not prefill again either;
* everything touching the llama context runs on one dedicated thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    GenerationParams,
    LoadProgress,
    ProgressCallback,
    StreamEvent,
    common_prefix,
)
from smoltui.backends.chat_template import CHATML_TEMPLATE, ChatTemplate
from smoltui.backends.decode_loop import ByteDetokenizer, Constraint, Grammar, decode
from smoltui.backends.gguf_file import GGUFInfo, read_gguf
from smoltui.backends.kv_snapshots import KVSnapshots, SnapshotFolder
from smoltui.backends.threaded import Emit, stream_from_thread
from smoltui.backends.tool_calls import call_schema
from smoltui.errors import BackendError, ModelError

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

MIN_CONTEXT = 256
"""The smallest context a model is loaded with, whatever the settings ask for."""



@dataclass(frozen=True)
class LlamaSettings:
    n_ctx: int = 4096
    n_threads: int = 2
    n_batch: int = 512
    prompt_cache_dir: Path | None = None
    # Shorter system prefixes prefill in well under a second; not worth a file.
    prompt_cache_min_tokens: int = 32
    prompt_cache_keep: int = 16
    kv_keep_bytes: int = 1 << 30
    """RAM for the KV states of conversations the context is not serving now (0: none kept)."""


@dataclass(frozen=True)
class PreparedPrompt:
    tokens: list[int]
    prefix_tokens: int
    """How many leading tokens are the system prefix worth caching on disk (0: none)."""


class LlamaCppBackend:
    name = "llama.cpp"

    def __init__(self, model_path: Path, settings: LlamaSettings, *, model_name: str | None = None) -> None:
        self.model_path = Path(model_path)
        self.settings = settings
        self.model_name = model_name or self.model_path.name
        self.info: GGUFInfo | None = None
        self.template: ChatTemplate | None = None
        self._llm: Llama | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._eog: set[int] = set()
        self._text_specials: set[int] = set()
        self._bos_text = ""
        self._add_bos = False
        self._model_key = ""
        self._byte_level_vocab = False
        self._grammars: dict[str, Any] = {}
        self.last_prompt_cache: str = "none"
        """What the last reply did with the on-disk system prompt state: none/hit/saved/kv."""
        self.kept = KVSnapshots(settings.kv_keep_bytes)
        self.saved: SnapshotFolder | None = None
        """Conversations kept on disk across runs (with the prompt cache folder and a RAM budget)."""
        self.last_restored_tokens = 0
        """Tokens the last reply took from a kept conversation, in RAM or on disk (0: none)."""
        self.last_restored_from = "none"
        """Where they came from: none/ram/disk."""

    # -- loading ---------------------------------------------------------------------------------

    @property
    def context_size(self) -> int:
        return self._llm.n_ctx() if self._llm is not None else self.settings.n_ctx

    @property
    def llama(self) -> Llama:
        """The loaded ``llama_cpp.Llama`` (for benchmarks comparing against raw llama-cpp-python)."""
        if self._llm is None:
            raise BackendError("the model is not loaded yet")
        return self._llm

    async def load(self, progress: ProgressCallback | None = None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load, progress or (lambda _: None))

    def _load(self, progress: ProgressCallback) -> None:
        progress(LoadProgress(0.05, f"reading {self.model_path.name}"))
        self.info = info = read_gguf(self.model_path)
        try:
            import llama_cpp
        except ImportError:
            raise ModelError(
                "llama-cpp-python is not installed: run `pip install 'smoltui[cpu]'`"
            ) from None
        progress(LoadProgress(0.15, f"loading {info.name} ({info.file_size / 1e6:,.0f} MB)"))
        n_ctx = self.settings.n_ctx
        if info.context_length:
            n_ctx = min(n_ctx, info.context_length)
        # Below a few hundred tokens not even a system prompt and one question fit, and llama.cpp's
        # own buffers misbehave (a numpy broadcast error at 10).
        n_ctx = max(MIN_CONTEXT, n_ctx)
        # OMP_WAIT_POLICY is left as the user set it. In the OpenMP builds of ggml every op of a step
        # ends at an OpenMP barrier; "passive" (sleep at each one) halved decode speed on an idle
        # 2-core machine, and only helped while other processes oversubscribed the cores.
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_threads=self.settings.n_threads,
                n_threads_batch=self.settings.n_threads,
                n_batch=self.settings.n_batch,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as error:
            raise ModelError(f"llama.cpp could not load {self.model_path}: {error}") from None
        progress(LoadProgress(0.9, "preparing chat template"))
        llm = self._llm
        vocab = llm._model.vocab
        self._eog = {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        # Markup a reply must keep as text even where the vocabulary makes it one special token
        # (SmolLM3: <think>=128002, <tool_call>=128015): detokenized with its text, not dropped.
        for markup in ("<think>", "</think>", "<tool_call>", "</tool_call>"):
            ids = llm.tokenize(markup.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                self._text_specials.add(ids[0])
        bos = llm.token_bos()
        self._bos_text = llm.detokenize([bos], special=True).decode("utf-8", "replace") if bos >= 0 else ""
        self._add_bos = bool(llm._model.add_bos_token()) and bos >= 0
        eos_text = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")
        self.template = ChatTemplate(
            info.chat_template or CHATML_TEMPLATE,
            bos_token=self._bos_text,
            eos_token=eos_text,
            origin=self.model_path.name,
        )
        # Splitting a prompt and tokenizing the pieces separately is only exact for byte-level BPE
        # (SentencePiece vocabularies add a space prefix to every piece).
        self._byte_level_vocab = llm.metadata.get("tokenizer.ggml.model") == "gpt2"
        stat = self.model_path.stat()
        identity = f"{self.model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{n_ctx}"
        self._model_key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        if self.settings.prompt_cache_dir is not None and self.settings.kv_keep_bytes > 0:
            # A KV state's layout is llama.cpp's own: a saved conversation only fits the version that wrote it.
            runtime = hashlib.sha256(f"{identity}:{llama_cpp.__version__}".encode()).hexdigest()[:16]
            self.saved = SnapshotFolder(self.settings.prompt_cache_dir, f"conv-{runtime}",
                                        self.settings.kv_keep_bytes)
        progress(LoadProgress(1.0, "ready"))

    async def close(self) -> None:
        if self._llm is not None and self.saved is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._save_conversations)
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, llm.close)
        self._executor.shutdown(wait=False)

    # -- prompts ---------------------------------------------------------------------------------

    def _tokenize(self, text: str) -> list[int]:
        tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._add_bos and not text.startswith(self._bos_text):
            tokens.insert(0, self.llama.token_bos())
        return tokens

    def _tokenize_reusing_cache(self, prompt: str) -> list[int]:
        """Tokenize ``prompt``, keeping the tokens the KV cache already holds for its leading text.

        A reply the model generated does not always re-tokenize to the tokens it was generated as
        (BPE prefers other splits); tokenizing the whole rendered history again would then throw
        away the cache from the first such reply on. So the longest run of cached tokens whose text
        starts the prompt is kept as is, and only the text after it is tokenized.
        """
        llm = self.llama
        if not self._byte_level_vocab:
            return self._tokenize(prompt)
        data = prompt.encode("utf-8")
        # What the context holds, and the conversations kept (in RAM, on disk): the prompt may continue any.
        candidates = [llm.input_ids[: llm.n_tokens].tolist(), *(list(s.tokens) for s in self.kept.snapshots)]
        if self.saved is not None:
            candidates += [list(tokens) for _, tokens in self.saved.token_lists()]
        best, keep, end = [], 0, 0
        for cached in candidates:
            count, offset = self._text_prefix_tokens(cached, data)
            if count > keep:
                best, keep, end = cached, count, offset
        if keep == 0:
            return self._tokenize(prompt)
        tail = data[end:]
        return best[:keep] + (llm.tokenize(tail, add_bos=False, special=True) if tail else [])

    def _text_prefix_tokens(self, cached: Sequence[int], data: bytes) -> tuple[int, int]:
        """How many leading ``cached`` tokens spell the start of ``data``, and the byte offset they reach."""
        llm = self.llama
        offsets = [0]
        for token in cached:
            piece = llm.detokenize([token], special=True)
            if not piece or not data.startswith(piece, offsets[-1]):
                break
            offsets.append(offsets[-1] + len(piece))
        keep = len(offsets) - 1
        # Never split a UTF-8 character between the kept tokens and the freshly tokenized tail.
        while keep > 0 and offsets[keep] < len(data) and data[offsets[keep]] & 0xC0 == 0x80:
            keep -= 1
        return keep, offsets[keep]

    def prepare(self, messages: Sequence[ChatMessage], params: GenerationParams) -> PreparedPrompt:
        """Render and tokenize the prompt; find the system prefix worth caching."""
        assert self.template is not None
        prompt = self.template.render(messages, think=params.think, tools=params.tools)
        tokens = self._tokenize_reusing_cache(prompt)
        prefix_text = self.template.system_prefix(messages, think=params.think, tools=params.tools)
        prefix = 0
        if prefix_text:
            prefix_tokens = self._tokenize(prefix_text)
            prefix = common_prefix(prefix_tokens, tokens)
        if prefix < self.settings.prompt_cache_min_tokens or prefix >= len(tokens):
            prefix = 0
        return PreparedPrompt(tokens, prefix)

    async def count_tokens(self, messages: Sequence[ChatMessage], params: GenerationParams) -> int:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._executor, self.prepare, messages, params)
        return len(prepared.tokens)

    # -- conversations kept in RAM -------------------------------------------------------------------

    def _switch_conversation(self, tokens: Sequence[int], cached: int) -> int:
        """Keep what the context holds if this prompt displaces it; bring back a kept conversation
        (from RAM, else from disk) that shares more with the prompt. Returns the tokens brought back."""
        self.last_restored_from = "none"
        kept = self.kept
        if kept.budget_bytes <= 0:
            return 0
        llm = self.llama
        if llm.n_tokens - cached >= kept.min_tokens:
            kept.keep_current(llm)
        snapshot, shared = kept.best(tokens)
        where = "ram"
        saved = self.saved
        if saved is not None and len(tokens) - max(cached, shared) >= saved.min_tokens:
            path, on_disk = saved.best(tokens)
            # Reading a file costs more than copying RAM: worth it for a long stretch of prefill only.
            if path is not None and on_disk >= max(cached, shared) + saved.min_tokens:
                loaded = saved.load(path)
                if loaded is not None:
                    kept.add(loaded)
                    snapshot, shared, where = loaded, on_disk, "disk"
        shared = min(shared, len(tokens) - 1)
        # Copying a state back costs milliseconds; prefilling the tokens it saves costs ~25 ms each.
        if snapshot is None or shared <= cached + 8:
            return 0
        if not kept.restore(llm, snapshot):
            return 0
        self.last_restored_from = where
        return shared

    def _save_conversations(self) -> None:
        """On close: the conversation the context holds and those kept in RAM go to disk (the newest few)."""
        assert self.saved is not None
        try:
            self.kept.keep_current(self.llama)
            self.saved.save(self.kept.snapshots)
        except Exception:  # closing must never fail over a cache
            log.exception("could not save the conversations' KV states")

    # -- on-disk system prompt states ---------------------------------------------------------------

    def _state_path(self, tokens: Sequence[int]) -> Path | None:
        folder = self.settings.prompt_cache_dir
        if folder is None:
            return None
        digest = hashlib.sha256(",".join(map(str, tokens)).encode()).hexdigest()[:24]
        return folder / f"{self._model_key}-{digest}.kvstate"

    def _restore_prefix(self, prepared: PreparedPrompt) -> str:
        """Make the KV cache hold the system prefix: reuse it, load it from disk, or prefill and save it."""
        llm = self.llama
        prefix = prepared.prefix_tokens
        if prefix == 0:
            return "none"
        head = prepared.tokens[:prefix]
        if llm.n_tokens >= prefix and list(llm.input_ids[:prefix]) == head:
            return "kv"
        path = self._state_path(head)
        if path is None:
            return "none"
        if path.exists() and self._load_state(path, head):
            os.utime(path)  # most recently used files survive pruning
            return "hit"
        # Prefill just the prefix first, so the saved state ends exactly at the system prompt.
        shared = common_prefix(list(llm.input_ids[: llm.n_tokens]), head)
        llm.n_tokens = shared
        llm.eval(head[shared:])
        self._save_state(path, head)
        return "saved"

    def _load_state(self, path: Path, head: list[int]) -> bool:
        import llama_cpp

        llm = self.llama
        llm.reset()
        llm._ctx.kv_cache_clear()
        capacity = len(head) + 1
        tokens_out = (llama_cpp.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        read = llama_cpp.llama_state_seq_load_file(
            llm._ctx.ctx, str(path).encode(), 0, tokens_out, capacity, ctypes.byref(count)
        )
        if read == 0 or list(tokens_out[: count.value]) != head:
            log.warning("discarding unreadable prompt state %s", path)
            llm._ctx.kv_cache_clear()
            path.unlink(missing_ok=True)
            return False
        llm.input_ids[: len(head)] = head
        llm.n_tokens = len(head)
        return True

    def _save_state(self, path: Path, head: list[int]) -> None:
        import llama_cpp

        llm = self.llama
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            array = (llama_cpp.llama_token * len(head))(*head)
            written = llama_cpp.llama_state_seq_save_file(llm._ctx.ctx, str(tmp).encode(), 0, array, len(head))
            if not written:
                raise OSError("llama.cpp wrote nothing")
            os.replace(tmp, path)
        except OSError as error:  # a full disk only costs us the cache, never the chat
            log.warning("could not save prompt state to %s: %s", path, error)
            tmp.unlink(missing_ok=True)
            return
        self._prune_states()

    def _prune_states(self) -> None:
        folder = self.settings.prompt_cache_dir
        if folder is None:
            return
        files = sorted(folder.glob("*.kvstate"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in files[self.settings.prompt_cache_keep :]:
            stale.unlink(missing_ok=True)

    # -- generation ------------------------------------------------------------------------------

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, cancel: CancelToken
    ) -> AsyncIterator[StreamEvent]:
        generate = functools.partial(self._generate, messages, params, cancel)
        async for event in stream_from_thread(self._executor, generate, cancel):
            yield event

    def _generate(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: CancelToken,
        emit: Emit,
    ) -> None:
        llm = self.llama
        started = time.perf_counter()
        prepared = self.prepare(messages, params)
        tokens = prepared.tokens
        n_ctx = min(llm.n_ctx(), len(llm.input_ids))
        if len(tokens) >= n_ctx:
            raise BackendError(f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}")
        cached = common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens)
        self.last_restored_tokens = self._switch_conversation(tokens, cached)
        cached = common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens)
        self.last_prompt_cache = self._restore_prefix(prepared)
        if self.last_prompt_cache == "hit":  # a prefix prefilled in this call ("saved") is not cached
            cached = common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens)
        cached = min(cached, len(tokens) - 1)  # generate() always re-evaluates at least one token
        if params.seed is not None:
            llm.set_seed(params.seed)
        decode(_LlamaRuntime(self, tokens[:cached], params), params, cancel, emit, prompt=tokens, cached=cached,
               started=started, in_thinking=params.think and self._opens_think(tokens))

    def _grammar(self, schema: Mapping[str, Any]) -> Any:
        """A GBNF grammar for ``schema`` (cached: building one takes a while for big schemas)."""
        from llama_cpp import LlamaGrammar
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            try:
                # The schema as written, not the sorted cache key: the grammar fixes the order of
                # object keys, and a workflow's `id` should come before its `tasks`.
                gbnf = json_schema_to_gbnf(json.dumps(schema))
                # llama-cpp-python's converter lets raw control characters (a newline, a tab) into
                # JSON strings, which no JSON parser accepts; upstream llama.cpp keeps them out.
                gbnf = gbnf.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |')
                # A `$` in a schema pattern comes out as `\$`, an escape llama.cpp's grammar parser
                # rejects (and then crashes the process); `$` needs no escape in a GBNF literal.
                gbnf = gbnf.replace("\\$", "$")
                self._grammars[key] = LlamaGrammar.from_string(gbnf, verbose=False)
            except Exception as error:  # the converter raises plain exceptions on unsupported schemas
                raise BackendError(f"cannot constrain output to this JSON schema: {error}") from None
        return self._grammars[key]

    def _opens_think(self, tokens: Sequence[int]) -> bool:
        """True when the generation prompt itself ends inside an open ``<think>`` block."""
        tail = self.llama.detokenize(list(tokens[-8:]), special=True).decode("utf-8", "replace")
        return tail.rstrip().endswith("<think>")



@dataclass(eq=False)
class _GrammarHold:
    """A GBNF grammar holding one stretch of a reply: llama.cpp's sampler applies and advances it
    inside ``generate()``, so every token it lets through is accepted, and the end shows as an
    end-of-generation token."""

    grammar: Any
    stopped: bool = False
    error: str | None = None

    def advance(self, token: int) -> bool:
        return True


class _LlamaRuntime:
    """llama.cpp under the decode loop (:class:`~smoltui.backends.decode_loop.Runtime`).

    ``Llama.generate`` evaluates and samples in one: it runs on while the loop steps exactly the tokens
    it yields, and starts again when the loop writes tokens itself (the prompt, a tag) or the
    constraint changes. Started again on the whole sequence, it evaluates only what the KV cache lacks.
    """

    def __init__(self, backend: LlamaCppBackend, held: Sequence[int], params: GenerationParams) -> None:
        self._backend = backend
        self._llm = backend.llama
        self._params = params
        self._sequence = list(held)
        self._generator: Generator[int, Any, None] | None = None
        self._constraint: Constraint | None = None
        self._picked: int | None = None
        self._follows = False
        """The next token follows the one ``generate`` yielded last: it can carry on."""
        self.context_size = self._llm.n_ctx()
        self.end_ids = backend._eog

    def prefill(self, tokens: Sequence[int]) -> bool:
        self._sequence.extend(tokens)
        self._follows = False
        return True

    def step(self, token: int) -> None:
        self._sequence.append(token)
        self._follows = token == self._picked

    def pick(self, constraint: Constraint | None) -> int:
        if self._generator is None or not self._follows or constraint is not self._constraint:
            self.close()
            params = self._params
            self._generator = self._llm.generate(
                self._sequence,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=0.05,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
                grammar=constraint.grammar if isinstance(constraint, _GrammarHold) else None,
            )
            self._constraint = constraint
        self._picked = next(self._generator)
        self._follows = False
        return self._picked

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode(), add_bos=False, special=True)

    def detokenizer(self) -> ByteDetokenizer:
        llm, specials = self._llm, self._backend._text_specials
        return ByteDetokenizer(lambda token: llm.detokenize([token], special=token in specials))

    def call_grammar(self, tools: Sequence[Mapping[str, Any]]) -> Grammar:
        return functools.partial(_GrammarHold, self._backend._grammar(call_schema(tools)))

    def json_grammar(self, schema: Mapping[str, Any]) -> Grammar:
        return functools.partial(_GrammarHold, self._backend._grammar(schema))

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()
            self._generator = None
