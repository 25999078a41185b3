"""Measure one backend and model the way a user meets it: load, first token, prefill, decode, memory.

Any :class:`~smoltui.backends.base.Backend` can be measured, so the numbers of llama.cpp, transformers
and a server are comparable: they come from the same :class:`GenerationStats` every backend reports.
Each run sends a different prompt of about ``prompt_tokens`` tokens (so no KV cache carries over from
the previous run) and asks for ``new_tokens`` tokens. A warm-up run of the same size first pays the
one-time costs (kernel set-up and tuning for these shapes, the allocator growing to its working set):
on a GPU the first reply decodes several times slower than the next ones. Medians over the measured
runs are reported; the warm-up run is reported apart.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smoltui.backends.base import (
    Backend,
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    GenerationStats,
)
from smoltui.errors import BackendError, ConfigError, ModelError, SmoltuiError

_WORDS = (
    "time", "people", "year", "way", "day", "thing", "world", "life", "hand", "part", "child", "eye",
    "place", "work", "week", "case", "point", "number", "group", "problem", "fact", "river", "garden",
    "window", "market", "story", "table", "letter", "music", "mountain", "city", "winter", "summer",
    "morning", "light", "stone", "paper", "voice", "road", "island", "forest", "train", "bridge",
    "color", "animal", "friend", "language", "history", "question", "answer", "reason", "method",
    "result", "system", "energy", "water", "fire", "cloud", "field", "ocean", "village", "machine",
    "engine", "signal", "pattern", "circle", "silver", "golden", "quiet", "bright", "careful", "simple",
    "early", "late", "open", "close", "under", "over", "between",
)
INSTRUCTION = "\n\nContinue the text above, in the same style, for as long as you can."


def filler(words: int, seed: int) -> str:
    """``words`` plain words, different for each seed; a longer text starts with the shorter one."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def check_sizes(prompt_tokens: int, new_tokens: int, runs: int) -> None:
    for flag, value in (("--prompt-tokens", prompt_tokens), ("--new-tokens", new_tokens), ("--runs", runs)):
        if value < 1:
            raise SmoltuiError(f"{flag} must be at least 1")


async def prompt_of(backend: Backend, tokens: int, seed: int, params: GenerationParams) -> list[ChatMessage]:
    """A user message whose rendered prompt takes about ``tokens`` tokens (never more, when possible)."""

    def messages(words: int) -> list[ChatMessage]:
        # The words come first: two runs' prompts differ from the end of the template's header on.
        return [ChatMessage("user", filler(words, seed) + INSTRUCTION)]

    base = await backend.count_tokens(messages(0), params)
    words = max(tokens - base, 0)
    for _ in range(5):
        if words == 0:
            break
        got = await backend.count_tokens(messages(words), params)
        if got == tokens or (got < tokens and tokens - got <= max(2, tokens // 100)):
            break
        words = max(1, int(words * (tokens - base) / max(got - base, 1)))
    return messages(words)


# -- memory ----------------------------------------------------------------------------------------


def rss_mb() -> float | None:
    """The resident memory of this process now (Linux), in MiB."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_mb() -> float | None:
    """The highest resident memory this process has had, in MiB (``ru_maxrss``)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def _cuda():  # noqa: ANN202 - torch is optional
    """``torch.cuda`` when a backend already imported torch and a GPU is there; never imports torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not break the benchmark
        return None


def gpu_peak_mb() -> float | None:
    cuda = _cuda()
    return cuda.max_memory_allocated() / 2**20 if cuda is not None else None


def _reset_gpu_peak() -> None:
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


# -- the measurement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_s: float
    prefill_tok_s: float
    decode_tok_s: float
    total_s: float
    stop_reason: str

    @classmethod
    def of(cls, stats: GenerationStats) -> RunResult:
        return cls(stats.prompt_tokens, stats.cached_tokens, stats.completion_tokens, stats.ttft_s,
                   stats.prefill_tok_s, stats.decode_tok_s, stats.total_s, stats.stop_reason)


@dataclass
class BenchReport:
    backend: str
    model: str
    load_s: float
    context_size: int
    prompt_tokens_target: int
    new_tokens_target: int
    runs: list[RunResult] = field(default_factory=list)
    warmup: RunResult | None = None
    """The first reply (same sizes, not in the medians): what a user waits for once after loading."""
    rss_before_load_mb: float | None = None
    rss_after_load_mb: float | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    gpu_peak_mb: float | None = None

    def median(self, name: str) -> float:
        return statistics.median(getattr(run, name) for run in self.runs) if self.runs else 0.0

    def as_dict(self) -> dict:
        def mb(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "backend": self.backend,
            "model": self.model,
            "load_s": round(self.load_s, 4),
            "ttft_s": round(self.median("ttft_s"), 4),
            "prefill_tok_s": round(self.median("prefill_tok_s"), 2),
            "decode_tok_s": round(self.median("decode_tok_s"), 2),
            "prompt_tokens": int(self.median("prompt_tokens")),
            "completion_tokens": int(self.median("completion_tokens")),
            "prompt_tokens_target": self.prompt_tokens_target,
            "new_tokens_target": self.new_tokens_target,
            "context_size": self.context_size,
            "rss_before_load_mb": mb(self.rss_before_load_mb),
            "rss_after_load_mb": mb(self.rss_after_load_mb),
            "rss_mb": mb(self.rss_mb),
            "peak_rss_mb": mb(self.peak_rss_mb),
            "gpu_peak_mb": mb(self.gpu_peak_mb),
            "runs": [_rounded(run) for run in self.runs],
            "warmup": _rounded(self.warmup) if self.warmup is not None else None,
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        }

    def table(self) -> str:
        def mb(value: float | None) -> str:
            return "-" if value is None else f"{value:,.0f} MB"

        loaded = ""
        if self.rss_before_load_mb is not None and self.rss_after_load_mb is not None:
            loaded = f", model load +{self.rss_after_load_mb - self.rss_before_load_mb:,.0f} MB"
        n = len(self.runs)
        rows = [
            ("backend", f"{self.backend} · {self.model}"),
            ("load", f"{self.load_s:.2f} s"),
            ("prompt", f"{self.median('prompt_tokens'):,.0f} tokens, {self.median('completion_tokens'):,.0f} "
                       f"generated (median of {n} run{'s' if n != 1 else ''})"),
            ("TTFT", f"{self.median('ttft_s'):.3f} s"),
            ("prefill", f"{self.median('prefill_tok_s'):,.1f} tok/s"),
            ("decode", f"{self.median('decode_tok_s'):,.1f} tok/s"),
            ("first", "-" if self.warmup is None else
                      f"reply after loading: TTFT {self.warmup.ttft_s:.3f} s, decode {self.warmup.decode_tok_s:,.1f} tok/s"),
            ("RAM", f"peak {mb(self.peak_rss_mb)}, now {mb(self.rss_mb)}{loaded}"),
            ("GPU", f"peak {mb(self.gpu_peak_mb)}" if self.gpu_peak_mb is not None else "-"),
        ]
        return "\n".join(f"{name:<8} {value}" for name, value in rows)


def _rounded(run: RunResult) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(run).items()}


async def _generate(backend: Backend, messages: list[ChatMessage], params: GenerationParams) -> GenerationStats:
    async for event in backend.stream(messages, params, CancelToken()):
        if isinstance(event, Finished):
            return event.stats
    raise BackendError(f"{backend.name} ended a reply without its stats")


async def run_bench(
    backend: Backend,
    model: str,
    *,
    prompt_tokens: int = 512,
    new_tokens: int = 128,
    runs: int = 3,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Load ``backend`` (closing it at the end) and measure ``runs`` replies."""
    check_sizes(prompt_tokens, new_tokens, runs)
    say = progress or (lambda _: None)
    _reset_gpu_peak()
    before = rss_mb()
    started = time.perf_counter()
    try:
        await backend.load()
        load_s = time.perf_counter() - started
        report = BenchReport(backend.name, getattr(backend, "model_name", model) or model, load_s,
                             backend.context_size, prompt_tokens, new_tokens,
                             rss_before_load_mb=before, rss_after_load_mb=rss_mb())
        if prompt_tokens + new_tokens > backend.context_size:
            raise ConfigError(
                f"--prompt-tokens {prompt_tokens} + --new-tokens {new_tokens} do not fit the context of "
                f"{backend.context_size} tokens: raise --n-ctx or lower them"
            )
        params = GenerationParams(max_tokens=new_tokens, temperature=0.7, seed=0, think=False)
        say("warming up")
        warm_up = await prompt_of(backend, prompt_tokens, seed=0, params=params)
        report.warmup = RunResult.of(await _generate(backend, warm_up, params))
        for run in range(runs):
            messages = await prompt_of(backend, prompt_tokens, seed=run + 1, params=params)
            say(f"run {run + 1}/{runs}")
            report.runs.append(RunResult.of(await _generate(backend, messages, params)))
    finally:
        await backend.close()
    report.rss_mb = rss_mb()
    # ru_maxrss is updated lazily by the kernel: never report a peak below a value we sampled.
    seen = [v for v in (peak_rss_mb(), report.rss_after_load_mb, report.rss_mb) if v is not None]
    report.peak_rss_mb = max(seen) if seen else None
    report.gpu_peak_mb = gpu_peak_mb()
    return report


# -- synthetic models ------------------------------------------------------------------------------


def synthetic_model(backend: str, cache_dir: Path, size: str = "3b", *, say: Callable[[str], None] = print) -> Path:
    """Build (once) a random-weight SmolLM3-shaped model for ``backend`` under ``cache_dir``; its path."""
    folder = cache_dir / "synthetic"
    tiny = size == "tiny"
    if backend == "llama_cpp":
        try:
            from smoltui.benchmarking import synthetic_gguf
        except ImportError as error:
            raise ModelError(f"building the synthetic GGUF needs numpy and gguf ({error}): pip install gguf") from None
        out = folder / f"smollm3-{size}-random-q4_k_m.gguf"
        if not out.exists():
            say(f"building a random-weight SmolLM3-{size.upper() if size == '3b' else size} GGUF in {out} "
                "(once; the 3B one takes a few minutes)")
        try:
            return synthetic_gguf.make(out, tiny=tiny, say=say)
        except ImportError as error:
            raise ModelError(f"building the synthetic GGUF needs gguf and llama-cpp-python ({error}): "
                             "pip install gguf 'smoltui[cpu]'") from None
    if backend == "transformers":
        from smoltui.benchmarking import synthetic_hf

        return synthetic_hf.make_folder(folder / f"smollm3-{size}-random-hf", tiny=tiny, say=say)
    raise ConfigError("--synthetic builds a local model: use it with --backend llama_cpp or transformers")
