"""The decode loop behind the transformers backend: one KV cache per model, kept between turns.

:class:`DecodeSession` owns the cache and the token ids it holds. A reply prefills only the prompt
tokens after the prefix the cache already holds, then runs one forward pass per token. Four ways to
run a decode step, from simplest to fastest:

* ``dynamic``: a ``DynamicCache`` that grows per token, plain eager forward passes (any model,
  any device map, CPU offload included);
* ``static``: a ``StaticCache`` sized ``max_context``, eager (the layout the two below need);
* ``compile``: static cache, the decode step compiled with ``torch.compile`` once per session
  (``mode="reduce-overhead"`` on CUDA, which also replays it as a CUDA graph);
* ``cuda_graph``: static cache, the decode step captured once in a ``torch.cuda.CUDAGraph`` by hand
  and replayed per token. This also works where ``torch.compile`` breaks the graph (bitsandbytes'
  4-bit layers): the Python of a forward pass runs once, at capture.

Every read and write of the cache happens inside ``torch.inference_mode()``: the cache's tensors
(the static layers' position counters included) are created lazily by the first forward pass, inside
inference mode, and an inference tensor can only be changed in place inside it.

On CUDA, the forward passes run with cuDNN's attention left out of the SDPA backends (flash, then
memory-efficient, then math): cuDNN builds an execution plan for every new shape, and a growing
``DynamicCache`` (or a new prompt length) is a new shape at every token, ~0.1 s each on an H200.

Only torch and transformers are needed here (imported lazily by the callers' modules), so the GPU
benchmark can drive exactly this code.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from smoltui.backends.base import common_prefix

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DecodeMode = Literal["dynamic", "static", "compile", "cuda_graph"]

# llama.cpp's defaults, so both backends sample alike.
MIN_P = 0.05
REPEAT_LAST_N = 64


def cache_keyword(model: Any) -> str:
    """The forward() keyword for the KV cache: ``cache`` in newer transformers, ``past_key_values`` before."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = MIN_P
    repeat_penalty: float = 1.0


def sample(
    logits: torch.Tensor, sampling: Sampling, history: Sequence[int], generator: torch.Generator | None
) -> int:
    """Pick the next token from one row of logits; temperature 0 is greedy."""
    import torch

    # (float first: the same picks, and on the CPU a float argmax beats a bf16 one twice over)
    logits = logits.float()
    if sampling.repeat_penalty != 1.0 and history:
        recent = torch.tensor(sorted(set(history[-REPEAT_LAST_N:])), device=logits.device)
        picked = logits[recent]
        logits = logits.clone()
        logits[recent] = torch.where(
            picked > 0, picked / sampling.repeat_penalty, picked * sampling.repeat_penalty
        )
    if sampling.temperature <= 0:
        return int(torch.argmax(logits).item())
    logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.min_p > 0:
        probs = probs.masked_fill(probs < probs.max() * sampling.min_p, 0.0)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest set whose mass reaches top_p (the first token always stays)
        drop = cumulative - sorted_probs > sampling.top_p * cumulative[-1]
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class DecodeSession:
    """The KV cache of one model and the tokens it holds; every method runs on the backend's one thread."""

    def __init__(
        self,
        model: Any,
        *,
        mode: DecodeMode = "dynamic",
        max_context: int = 8192,
        cudnn_attention: bool = False,
    ) -> None:
        import torch

        if mode == "cuda_graph" and not torch.cuda.is_available():
            raise RuntimeError("a CUDA graph needs a CUDA device")
        self.model = model
        self.mode: DecodeMode = mode
        self.max_context = max_context
        self.tokens: list[int] = []
        """Token ids whose keys and values the cache holds, in order."""
        self.device = _input_device(model)
        self._kw = cache_keyword(model)
        self.cudnn_attention = cudnn_attention
        """Let SDPA pick cuDNN's attention on CUDA (off by default: a plan per new shape, see above)."""
        self._cache: Any = None
        self._step_fn: Any = None
        self._graph: Any = None
        self._static_ids: torch.Tensor | None = None
        self._static_pos: torch.Tensor | None = None
        self._static_logits: torch.Tensor | None = None
        self._compiled = False
        self.compile_s = 0.0
        """Seconds spent compiling or capturing the decode step (the first step after a reset pays it)."""
        self._new_cache()
        if mode == "compile":
            # Compiled once for the session: the static cache keeps every shape of a step fixed, so
            # later replies reuse the compiled graph.
            compile_mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self._step_fn = torch.compile(self._forward_step, mode=compile_mode, dynamic=False)
        else:
            self._step_fn = self._forward_step

    # -- cache bookkeeping ------------------------------------------------------------------------

    @property
    def static(self) -> bool:
        return self.mode != "dynamic"

    def _new_cache(self) -> None:
        from transformers import DynamicCache, StaticCache

        config = self.model.config
        if self.static:
            self._cache = StaticCache(config=config, max_cache_len=self.max_context)
        else:
            try:
                self._cache = DynamicCache(config=config)
            except TypeError:  # older transformers
                self._cache = DynamicCache()
        self.tokens = []

    def _set_counters(self, length: int) -> None:
        """Move the static layers' position counters to ``length``, in place, inside inference mode.

        The static layers write at, and mask from, their own counter. In place, so the tensor keeps
        the address a compiled or captured step reads; inside inference mode, because the counter
        is an inference tensor once the first forward pass moved it to the model's device.
        """
        import torch

        with torch.inference_mode():
            for layer in self._cache.layers:
                counter = getattr(layer, "cumulative_length", None)
                if isinstance(counter, torch.Tensor):
                    counter.fill_(length)
                elif counter is not None:  # a plain int in some versions
                    layer.cumulative_length = length

    def _set_length(self, length: int) -> None:
        """Make the cache hold only its first ``length`` tokens."""
        import torch

        if length == len(self.tokens):
            return
        if length == 0 and not self.static:
            self._new_cache()
            return
        if self.static:
            self._set_counters(length)
        else:
            with torch.inference_mode():
                self._cache.crop(length - len(self.tokens))  # negative: drop that many (every version)
        del self.tokens[length:]

    def reuse(self, prompt: Sequence[int]) -> int:
        """Keep the cached prefix ``prompt`` shares (at least one token is left to prefill); return its length."""
        keep = min(common_prefix(self.tokens, prompt), len(prompt) - 1)
        self._set_length(max(keep, 0))
        return len(self.tokens)

    def reset(self) -> None:
        """Empty the cache, whatever state a failed forward pass left it in."""
        if self.static:
            self._set_counters(0)
            self.tokens = []
        else:
            self._new_cache()

    # -- forward passes ---------------------------------------------------------------------------

    def _attention(self) -> contextlib.AbstractContextManager[Any]:
        """The SDPA backends a forward pass may use: all but cuDNN on CUDA (unless asked), as torch picks elsewhere."""
        if self.device.type != "cuda" or self.cudnn_attention:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1, **{self._kw: self._cache}
        )
        return out.logits[:, -1, :]

    def _forward_step(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self._forward(ids, positions)

    def prefill(
        self, ids: Sequence[int], chunk: int = 512, cancelled: Callable[[], bool] | None = None
    ) -> torch.Tensor | None:
        """Run the prompt tokens after the cached prefix through the model; return the last logits row.

        Long prompts go in chunks (bounded activation memory); None when ``cancelled`` turned true
        between two chunks.
        """
        import torch

        if not ids:
            raise ValueError("nothing to prefill")
        if len(self.tokens) + len(ids) > self.max_context:
            raise OverflowError(
                f"{len(self.tokens) + len(ids)} tokens do not fit a context of {self.max_context}"
            )
        logits = None
        with torch.inference_mode(), self._attention():
            for start in range(0, len(ids), chunk):
                if start and cancelled is not None and cancelled():
                    return None
                part = list(ids[start : start + chunk])
                first = len(self.tokens)
                tensor = torch.tensor([part], dtype=torch.long, device=self.device)
                positions = torch.arange(first, first + len(part), device=self.device).unsqueeze(0)
                logits = self._forward(tensor, positions)
                self.tokens.extend(part)
        assert logits is not None
        return logits[0]

    def step(self, token: int) -> torch.Tensor:
        """Feed one token, return the logits for the next one."""
        import time

        import torch

        if len(self.tokens) + 1 > self.max_context:
            raise OverflowError(f"the context of {self.max_context} tokens is full")
        position = len(self.tokens)
        with torch.inference_mode(), self._attention():
            if self.mode == "cuda_graph":
                if self._graph is None:
                    started = time.perf_counter()
                    try:
                        self._capture()
                    except Exception as error:  # a layer that cannot be captured: stay correct, run eager
                        log.warning(
                            "could not capture the decode step in a CUDA graph (%s); running eager", error
                        )
                        self._graph = None
                        self.mode = "static"
                        self._set_counters(position)
                        torch.cuda.synchronize()
                        return self.step(token)
                    finally:
                        self.compile_s += time.perf_counter() - started
                assert self._static_ids is not None and self._static_pos is not None
                self._static_ids.fill_(token)
                self._static_pos.fill_(position)
                self._graph.replay()
                logits = self._static_logits
            else:
                ids = torch.tensor([[token]], dtype=torch.long, device=self.device)
                positions = torch.tensor([[position]], dtype=torch.long, device=self.device)
                if self.mode == "compile" and self.device.type == "cuda":
                    torch.compiler.cudagraph_mark_step_begin()
                if self.mode == "compile" and not self._compiled:
                    # The first call compiles (and on CUDA the next ones record the graph): time it.
                    started = time.perf_counter()
                    logits = self._step_fn(ids, positions)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()
                    self.compile_s += time.perf_counter() - started
                    self._compiled = True
                else:
                    logits = self._step_fn(ids, positions)
        self.tokens.append(token)
        assert logits is not None
        # A compiled or captured step reuses its output buffer on the next call: hand out a copy.
        return logits[0].clone() if self.mode in ("compile", "cuda_graph") else logits[0]

    def _capture(self) -> None:
        """Record one decode step in a CUDA graph; run it on a side stream first so allocations settle."""
        import torch

        length = len(self.tokens)
        self._static_ids = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self._static_pos = torch.full((1, 1), length, dtype=torch.long, device=self.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                # Each warm-up step writes a slot at the current length (the next real step overwrites
                # it) and advances the position counter, which is set back after.
                self._forward_step(self._static_ids, self._static_pos)
                self._set_counters(length)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_logits = self._forward_step(self._static_ids, self._static_pos)
        # Capturing records kernels without running them: the counter is where it was.
        self._set_counters(length)
        self._graph = graph


def _input_device(model: Any) -> torch.device:
    """Where input ids go: the embedding's device (with a device map the model spans several)."""
    import torch

    try:
        device = model.get_input_embeddings().weight.device
    except AttributeError:
        device = torch.device(getattr(model, "device", "cpu"))
    # an embedding offloaded to disk sits on "meta" until accelerate's hooks move it in: feed the CPU
    return torch.device("cpu") if device.type == "meta" else device
