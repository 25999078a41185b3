"""Our llama.cpp backend against raw llama-cpp-python, on a model of SmolLM3-3B's exact shape.

    .venv/bin/python benchmarks/bench_llama.py [--model PATH] [--threads N] [--n-ctx 4096] [--quick]

The default model is the random-weight Q4_K_M file from ``make_random_smollm3.py`` (created if missing).
Random weights never stop on their own, so every reply is cut at a fixed ``max_tokens`` and like is
compared with like. Three measurements:

a. first turn: raw ``llama_cpp.Llama.generate`` on the tokens our backend renders vs our backend's
   ``stream`` in a fresh instance (fresh prompt-cache dir): TTFT, prefill tok/s, decode tok/s.
   Target: our decode >= 0.95x raw. Raw runs on the backend's own ``Llama``, on its thread, and the
   two sides take turns going first: a second instance on another thread is another OpenMP team
   and another copy of the weights, and on a busy machine that placement decided the ratio.
b. follow-up: TTFT of a message sent after a ~2,000-token conversation that the backend itself generated,
   vs TTFT of the same message as the first turn of a fresh chat. Target: <= 1.5x.
c. cached system prompt: a ~500-token system prompt prefilled once (state saved to disk), then a new
   backend instance with the same cache dir opens a new chat with it. Target: TTFT < 2 s.
d. switching think mode on mid-chat (the template renders the chat differently: a re-prefill);
e. back in the ~2,000-token chat after another chat took the context: TTFT with the conversation
   kept in RAM (``kv_snapshots``) and with keeping switched off.
f. that chat's next message in a later run (a new instance; closing wrote the chat to disk).

``--quick`` uses the tiny model and small sizes to check the script end to end in well under a minute.
Results: a table on stdout and ``benchmarks/out/bench_llama.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for entry in (str(REPO), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import make_random_smollm3  # noqa: E402

from smoltui.backends.base import (  # noqa: E402
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    GenerationStats,
    TextDelta,
    ThinkingDelta,
)
from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings, common_prefix  # noqa: E402

OUT_JSON = HERE / "out" / "bench_llama.json"
SYSTEM_SHORT = "You are a helpful assistant. Answer clearly and briefly."


@dataclass(frozen=True)
class Sizes:
    max_tokens: int  # decoded tokens per reply in (a)
    repeats: int  # (a) runs per side, interleaved raw/ours; best and median reported
    first_user_tokens: int  # (a) user message size
    conversation_tokens: int  # (b) history size before the follow-up
    conversation_turns: int
    build_max_tokens: int  # (b) assistant reply length while building the history
    followup_tokens: int  # (b) the measured message
    probe_max_tokens: int  # replies whose TTFT is all we need
    system_tokens: int  # (c) system prompt size


FULL = Sizes(64, 3, 200, 2000, 6, 32, 100, 4, 500)
QUICK = Sizes(16, 1, 64, 300, 3, 8, 32, 4, 120)

TARGET_DECODE = 0.95
TARGET_FOLLOWUP = 1.5
TARGET_CACHED_S = 2.0

# -- deterministic filler text ----------------------------------------------------------------------

_WORDS = (  # noqa: SIM905
    "the a an of to in on for with by from about over under after before between during river "
    "mountain city village garden library window kitchen market station engine signal network server "
    "model question answer report letter story chapter paper record memory system process method "
    "result value number table file folder command message teacher student doctor farmer driver "
    "painter writer builder morning evening winter summer spring autumn weather forest ocean island "
    "bridge road tower castle harbor valley desert north south east west small large quiet bright "
    "careful simple early late quick slow green blue golden silver wooden ancient modern local "
    "remote useful strange open closed heavy light warm cold reads writes builds opens closes "
    "carries moves finds keeps shows takes gives makes checks counts measures explains describes "
    "compares follows remembers prepares collects repairs visits watches and but because while "
    "although since"
).split()


def filler(n_tokens: int, count: Callable[[str], int], seed: int, lead: str = "") -> str:
    """English-looking sentences of at most ``n_tokens`` tokens (as ``count`` measures), deterministic."""
    rng = random.Random(seed)
    words: list[str] = []
    sentence_left = 0
    # Overshoot (about 1.3 tokens per word here), then cut back to the budget with a binary search.
    while len(words) < n_tokens * 1.2 + 8:
        if sentence_left == 0:
            sentence_left = rng.randint(7, 15)
            word = rng.choice(_WORDS).capitalize()
        else:
            word = rng.choice(_WORDS)
        sentence_left -= 1
        words.append(word + ("." if sentence_left == 0 else ""))

    def text(k: int) -> str:
        body = " ".join(words[:k])
        return f"{lead}{body}" if lead else body

    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text(mid)) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text(lo)


# -- running things ---------------------------------------------------------------------------------


@dataclass
class Reply:
    text: str
    thinking: str | None
    stats: GenerationStats
    prompt_cache: str
    wall_s: float

    def summary(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "prompt_cache": self.prompt_cache, "wall_s": round(self.wall_s, 4)}


def params(max_tokens: int, think: bool = False) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=0, think=think)


async def chat(
    backend: LlamaCppBackend, messages: Sequence[ChatMessage], max_tokens: int, think: bool = False
) -> Reply:
    text: list[str] = []
    thinking: list[str] = []
    stats: GenerationStats | None = None
    started = time.perf_counter()
    async for event in backend.stream(messages, params(max_tokens, think), CancelToken()):
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ThinkingDelta):
            thinking.append(event.text)
        elif isinstance(event, Finished):
            stats = event.stats
    assert stats is not None, "the stream ended without Finished"
    return Reply(
        "".join(text),
        "".join(thinking) or None,
        stats,
        backend.last_prompt_cache,
        time.perf_counter() - started,
    )


async def new_backend(model: Path, args: argparse.Namespace, cache_dir: Path) -> LlamaCppBackend:
    settings = LlamaSettings(
        n_ctx=args.n_ctx, n_threads=args.threads, n_batch=512, prompt_cache_dir=cache_dir
    )
    backend = LlamaCppBackend(model, settings)
    await backend.load()
    return backend


def raw_run(llm: Any, tokens: list[int], max_tokens: int) -> dict[str, Any]:
    """Plain llama-cpp-python: prompt eval -> first token -> ``max_tokens`` tokens, same sampler path."""
    llm.reset()  # no prefix reuse: n_tokens = 0, eval() drops every KV cell from position 0
    out: list[int] = []
    started = time.perf_counter()
    first = None
    generator = llm.generate(tokens, top_k=40, top_p=0.95, min_p=0.05, temp=0.0, repeat_penalty=1.0)
    for token in generator:
        if first is None:
            first = time.perf_counter()
        out.append(token)
        if len(out) >= max_tokens:
            break
    generator.close()
    ended = time.perf_counter()
    assert first is not None
    ttft = first - started
    decode_s = ended - first
    return {
        "prompt_tokens": len(tokens),
        "completion_tokens": len(out),
        "ttft_s": round(ttft, 4),
        "prefill_tok_s": round(len(tokens) / ttft, 2),
        "decode_tok_s": round((len(out) - 1) / decode_s, 2) if len(out) > 1 and decode_s > 0 else 0.0,
        "total_s": round(ended - started, 4),
        "text": llm.detokenize(out, special=False).decode("utf-8", "replace"),
    }


def kv_divergence(
    backend: LlamaCppBackend, messages: Sequence[ChatMessage], max_tokens: int
) -> dict[str, Any]:
    """Where the prompt for ``messages`` stops matching what the KV cache holds, with the tokens around it."""
    llm = backend.llama
    kv = [int(t) for t in llm.input_ids[: llm.n_tokens]]
    prompt = backend.prepare(messages, params(max_tokens)).tokens
    at = common_prefix(kv, prompt)

    def show(tokens: Sequence[int]) -> str:
        return llm.detokenize(list(tokens), special=True).decode("utf-8", "replace")

    return {
        "kv_tokens": len(kv),
        "prompt_tokens": len(prompt),
        "shared_prefix": at,
        "kv_tokens_lost": len(kv) - at,
        "kv_next": kv[at : at + 8],
        "prompt_next": prompt[at : at + 8],
        "kv_text_next": show(kv[at : at + 8]),
        "prompt_text_next": show(prompt[at : at + 8]),
        "context_before": show(prompt[max(0, at - 8) : at]),
    }


# -- the three measurements ---------------------------------------------------------------------------


async def bench_first_turn(
    model: Path, args: argparse.Namespace, sizes: Sizes, user: str, work: Path
) -> dict[str, Any]:
    messages = [ChatMessage("system", SYSTEM_SHORT), ChatMessage("user", user)]
    raws: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    for rep in range(sizes.repeats):
        backend = await new_backend(model, args, work / f"a-{rep}")  # fresh instance, empty cache dir
        tokens = backend.prepare(messages, params(sizes.max_tokens)).tokens
        run_raw = functools.partial(loop.run_in_executor, backend._executor, raw_run, backend.llama, tokens,
                                    sizes.max_tokens)
        if rep % 2 == 0:
            r = await run_raw()
            # Our side still starts cold: nothing in the KV cache, no state file in its fresh cache dir.
            await loop.run_in_executor(backend._executor, backend.llama.reset)
            reply = await chat(backend, messages, sizes.max_tokens)
        else:
            reply = await chat(backend, messages, sizes.max_tokens)
            r = await run_raw()
        raws.append(r)
        s = reply.stats
        # The backend prefills the system prefix (and saves it) inside this call, yet reports those tokens as
        # cached: the effective rate counts every token this call really prefilled.
        effective = s.prompt_tokens / s.ttft_s if s.ttft_s > 0 else 0.0
        ours.append({**reply.summary(), "prefill_tok_s_effective": round(effective, 2), "text": reply.text})
        await backend.close()
        print(
            f"  (a) run {rep + 1}/{sizes.repeats}: raw ttft {r['ttft_s']:.2f}s decode {r['decode_tok_s']:.2f} tok/s | "
            f"ours ttft {s.ttft_s:.2f}s decode {s.decode_tok_s:.2f} tok/s (cached {s.cached_tokens}, {reply.prompt_cache})",
            flush=True,
        )

    def best(rows: list[dict[str, Any]], key: str, low: bool = False) -> float:
        values = [float(r[key]) for r in rows]
        return min(values) if low else max(values)

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(float(r[key]) for r in rows))

    same_text = all(o["text"] == r["text"] for o, r in zip(ours, raws, strict=True))
    pairs = [o["decode_tok_s"] / r["decode_tok_s"] for o, r in zip(ours, raws, strict=True) if r["decode_tok_s"]]
    return {
        "prompt_tokens": raws[0]["prompt_tokens"],
        "max_tokens": sizes.max_tokens,
        "raw_runs": raws,
        "ours_runs": ours,
        "same_output_text": same_text,
        "decode_ratio_per_repeat": [round(x, 3) for x in pairs],
        "decode_ratio_median_of_repeats": round(float(statistics.median(pairs)), 3) if pairs else 0.0,
        "raw": {
            "ttft_s": best(raws, "ttft_s", low=True),
            "prefill_tok_s": best(raws, "prefill_tok_s"),
            "decode_tok_s": best(raws, "decode_tok_s"),
            "decode_tok_s_median": median(raws, "decode_tok_s"),
        },
        "ours": {
            "ttft_s": best(ours, "ttft_s", low=True),
            "prefill_tok_s_reported": best(ours, "prefill_tok_s"),
            "prefill_tok_s": best(ours, "prefill_tok_s_effective"),
            "decode_tok_s": best(ours, "decode_tok_s"),
            "decode_tok_s_median": median(ours, "decode_tok_s"),
            "cached_tokens_reported": ours[0]["cached_tokens"],
        },
    }


async def bench_followup(
    model: Path, args: argparse.Namespace, sizes: Sizes, count: Callable[[str], int], work: Path
) -> dict[str, Any]:
    backend = await new_backend(model, args, work / "b-conv")
    history: list[ChatMessage] = [ChatMessage("system", SYSTEM_SHORT)]
    header = await backend.count_tokens(history + [ChatMessage("user", "")], params(1))
    per_turn = (sizes.conversation_tokens - header) // sizes.conversation_turns
    user_tokens = max(8, per_turn - sizes.build_max_tokens - 12)
    turns: list[dict[str, Any]] = []
    started = time.perf_counter()
    for turn in range(sizes.conversation_turns):
        user = filler(user_tokens, count, seed=100 + turn, lead=f"Question {turn + 1}. ")
        history.append(ChatMessage("user", user))
        diverge = kv_divergence(backend, history, sizes.build_max_tokens) if turn else None
        reply = await chat(backend, history, sizes.build_max_tokens)
        history.append(ChatMessage("assistant", reply.text, thinking=reply.thinking))
        s = reply.stats
        turns.append({**reply.summary(), "kv_divergence": diverge, "reply_text": reply.text})
        print(
            f"  (b) turn {turn + 1}/{sizes.conversation_turns}: prompt {s.prompt_tokens} tokens, cached "
            f"{s.cached_tokens}, prefilled {s.new_prompt_tokens}, ttft {s.ttft_s:.2f}s",
            flush=True,
        )
    build_s = time.perf_counter() - started
    followup = filler(sizes.followup_tokens, count, seed=999, lead="One more thing. ")
    conversation = history + [ChatMessage("user", followup)]
    history_tokens = await backend.count_tokens(history, params(1))
    diverge = kv_divergence(backend, conversation, sizes.probe_max_tokens)
    follow = await chat(backend, conversation, sizes.probe_max_tokens)
    print(
        f"  (b) follow-up: prompt {follow.stats.prompt_tokens}, cached {follow.stats.cached_tokens}, "
        f"prefilled {follow.stats.new_prompt_tokens}, ttft {follow.stats.ttft_s:.2f}s",
        flush=True,
    )
    # (d) The cost of switching think mode mid-chat: SmolLM3's template writes the mode into the
    # system header and renders every earlier reply differently, so the cache is lost from there.
    switched = conversation + [
        ChatMessage("assistant", follow.text, thinking=follow.thinking),
        ChatMessage("user", "And in one sentence?"),
    ]
    switch = await chat(backend, switched, sizes.probe_max_tokens, think=True)
    print(
        f"  (d) think switched on: prompt {switch.stats.prompt_tokens}, cached {switch.stats.cached_tokens}, "
        f"prefilled {switch.stats.new_prompt_tokens}, ttft {switch.stats.ttft_s:.2f}s",
        flush=True,
    )
    # (e) Back in this chat after another one took the context (another chat, a plan, a workflow
    # task): with the conversation kept in RAM, then with keeping switched off.
    answered = conversation + [ChatMessage("assistant", follow.text, thinking=follow.thinking)]
    back: dict[str, Any] = {}
    for keep in (True, False):
        if not keep:
            backend.kept.budget_bytes = 0
            backend.kept.clear()
        other = [
            ChatMessage("system", "You translate English into French. Reply with the translation only."),
            ChatMessage("user", filler(48, count, seed=500 + keep)),
        ]
        await chat(backend, other, sizes.probe_max_tokens)
        returning = answered + [ChatMessage("user", f"Back to my notes{'' if keep else ' again'}: what came first?")]
        reply = await chat(backend, returning, sizes.probe_max_tokens)
        back["kept" if keep else "not_kept"] = {**reply.summary(), "restored_tokens": backend.last_restored_tokens}
        print(
            f"  (e) back after another chat, {'kept in RAM' if keep else 'not kept'}: prompt "
            f"{reply.stats.prompt_tokens}, cached {reply.stats.cached_tokens}, ttft {reply.stats.ttft_s:.2f}s",
            flush=True,
        )
    # (f) The same chat in a later run: closing wrote it beside the prompt cache; a new instance reads it.
    backend.kept.budget_bytes = LlamaSettings().kv_keep_bytes
    later_chat = returning + [
        ChatMessage("assistant", reply.text, thinking=reply.thinking),
        ChatMessage("user", "Thanks. One last question: what came second?"),
    ]
    await backend.close()
    later = await new_backend(model, args, work / "b-conv")
    reopened = await chat(later, later_chat, sizes.probe_max_tokens)
    back["later_run"] = {**reopened.summary(), "restored_tokens": later.last_restored_tokens,
                         "restored_from": later.last_restored_from}
    await later.close()
    print(
        f"  (f) the chat in a later run: prompt {reopened.stats.prompt_tokens}, cached "
        f"{reopened.stats.cached_tokens} (from {later.last_restored_from}), ttft {reopened.stats.ttft_s:.2f}s",
        flush=True,
    )

    fresh = await new_backend(model, args, work / "b-first")
    first = await chat(
        fresh, [ChatMessage("system", SYSTEM_SHORT), ChatMessage("user", followup)], sizes.probe_max_tokens
    )
    await fresh.close()
    print(
        f"  (b) same message as a first turn: prompt {first.stats.prompt_tokens}, ttft {first.stats.ttft_s:.2f}s",
        flush=True,
    )
    ratio = follow.stats.ttft_s / first.stats.ttft_s
    return {
        "history_tokens": history_tokens,
        "build_s": round(build_s, 2),
        "turns": turns,
        "followup": {**follow.summary(), "kv_divergence": diverge},
        "first_turn": first.summary(),
        "ratio": round(ratio, 3),
        "think_switch": switch.summary(),
        "switch_back": back,
    }


async def bench_cached_system(
    model: Path, args: argparse.Namespace, sizes: Sizes, count: Callable[[str], int], work: Path
) -> dict[str, Any]:
    system = filler(
        sizes.system_tokens, count, seed=7, lead="You are the archive assistant of a small town library. "
    )
    cache_dir = work / "c-cache"
    first_backend = await new_backend(model, args, cache_dir)
    uncached = await chat(
        first_backend,
        [ChatMessage("system", system), ChatMessage("user", "Hello! What can you help me with today?")],
        sizes.probe_max_tokens,
    )
    await first_backend.close()
    states = sorted(cache_dir.glob("*.kvstate"))
    print(
        f"  (c) uncached: ttft {uncached.stats.ttft_s:.2f}s ({uncached.prompt_cache}), {len(states)} state file(s)",
        flush=True,
    )

    second_backend = await new_backend(model, args, cache_dir)  # a new instance: empty KV, same cache dir
    cached = await chat(
        second_backend,
        [ChatMessage("system", system), ChatMessage("user", "Which books about rivers do you have?")],
        sizes.probe_max_tokens,
    )
    await second_backend.close()
    print(
        f"  (c) new instance, same system prompt: ttft {cached.stats.ttft_s:.2f}s ({cached.prompt_cache})",
        flush=True,
    )
    return {
        "system_tokens": count(system),
        "uncached": uncached.summary(),
        "cached": cached.summary(),
        "state_files": [{"name": p.name, "bytes": p.stat().st_size} for p in states],
    }


# -- report -------------------------------------------------------------------------------------------


def machine(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": args.threads,
        "llama_cpp_python": llama_cpp.__version__,
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


@dataclass
class Row:
    name: str
    ours: str
    base: str
    ratio: str
    target: str
    result: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(
        self, name: str, ours: str, base: str = "", ratio: str = "", target: str = "", ok: bool | None = None
    ) -> None:
        self.rows.append(
            Row(name, ours, base, ratio, target, "" if ok is None else ("PASS" if ok else "MISS"))
        )

    def print(self) -> None:
        head = Row("measurement", "ours", "baseline", "ratio", "target", "result")
        rows = [head, *self.rows]
        widths = [
            max(len(getattr(r, f)) for r in rows)
            for f in ("name", "ours", "base", "ratio", "target", "result")
        ]
        for i, r in enumerate(rows):
            cells = (r.name, r.ours, r.base, r.ratio, r.target, r.result)
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
            if i == 0:
                print("  ".join("-" * w for w in widths))


def build_report(results: dict[str, Any]) -> Report:
    rep = Report()
    a = results["first_turn"]
    raw, ours = a["raw"], a["ours"]
    n = a["prompt_tokens"]
    rep.add(
        f"(a) TTFT, {n}-token first turn",
        f"{ours['ttft_s']:.2f} s",
        f"raw {raw['ttft_s']:.2f} s",
        f"{ours['ttft_s'] / raw['ttft_s']:.2f}x",
    )
    rep.add(
        "(a) prefill tok/s (effective)",
        f"{ours['prefill_tok_s']:.1f}",
        f"raw {raw['prefill_tok_s']:.1f}",
        f"{ours['prefill_tok_s'] / raw['prefill_tok_s']:.2f}x",
    )
    rep.add(
        "(a) prefill tok/s (as reported)",
        f"{ours['prefill_tok_s_reported']:.1f}",
        f"raw {raw['prefill_tok_s']:.1f}",
        f"{ours['prefill_tok_s_reported'] / raw['prefill_tok_s']:.2f}x",
        f"cached_tokens={ours['cached_tokens_reported']}",
    )
    decode_ratio = ours["decode_tok_s"] / raw["decode_tok_s"]
    rep.add(
        f"(a) decode tok/s, {a['max_tokens']} tokens (best)",
        f"{ours['decode_tok_s']:.2f}",
        f"raw {raw['decode_tok_s']:.2f}",
        f"{decode_ratio:.3f}x",
        f">= {TARGET_DECODE}x",
        decode_ratio >= TARGET_DECODE,
    )
    median_ratio = ours["decode_tok_s_median"] / raw["decode_tok_s_median"]
    rep.add(
        "(a) decode tok/s (median)",
        f"{ours['decode_tok_s_median']:.2f}",
        f"raw {raw['decode_tok_s_median']:.2f}",
        f"{median_ratio:.3f}x",
    )
    rep.add(
        "(a) decode ours/raw within each repeat (median)",
        " ".join(f"{x:.2f}" for x in a["decode_ratio_per_repeat"]),
        "",
        f"{a['decode_ratio_median_of_repeats']:.3f}x",
    )
    b = results["followup"]
    f, first = b["followup"], b["first_turn"]
    rep.add(
        f"(b) follow-up TTFT after {b['history_tokens']} tokens",
        f"{f['ttft_s']:.2f} s",
        f"1st turn {first['ttft_s']:.2f} s",
        f"{b['ratio']:.2f}x",
        f"<= {TARGET_FOLLOWUP}x",
        b["ratio"] <= TARGET_FOLLOWUP,
    )
    rep.add(
        "(b) follow-up tokens: prompt/cached/new",
        f"{f['prompt_tokens']}/{f['cached_tokens']}/{f['prompt_tokens'] - f['cached_tokens']}",
        f"1st turn {first['prompt_tokens']}/-/{first['prompt_tokens']}",
    )
    d = b["think_switch"]
    rep.add(
        "(d) TTFT after switching think on",
        f"{d['ttft_s']:.2f} s",
        f"follow-up {f['ttft_s']:.2f} s",
        f"{d['ttft_s'] / f['ttft_s']:.1f}x",
        f"prefilled {d['prompt_tokens'] - d['cached_tokens']} of {d['prompt_tokens']}",
    )
    e = b["switch_back"]
    kept, lost = e["kept"], e["not_kept"]
    rep.add(
        "(e) TTFT back in a chat after another one",
        f"{kept['ttft_s']:.2f} s",
        f"not kept {lost['ttft_s']:.2f} s",
        f"{kept['ttft_s'] / lost['ttft_s']:.2f}x",
        f"restored {kept['restored_tokens']} of {kept['prompt_tokens']}",
    )
    f_ = e["later_run"]
    rep.add(
        "(f) TTFT of that chat in a later run",
        f"{f_['ttft_s']:.2f} s",
        f"not kept {lost['ttft_s']:.2f} s",
        f"{f_['ttft_s'] / lost['ttft_s']:.2f}x",
        f"{f_['restored_tokens']} of {f_['prompt_tokens']} from {f_['restored_from']}",
    )
    c = results["cached_system"]
    size = sum(s["bytes"] for s in c["state_files"])
    rep.add(
        f"(c) TTFT, cached {c['system_tokens']}-token system prompt",
        f"{c['cached']['ttft_s']:.2f} s ({c['cached']['prompt_cache']})",
        f"uncached {c['uncached']['ttft_s']:.2f} s",
        f"{c['cached']['ttft_s'] / c['uncached']['ttft_s']:.2f}x",
        f"< {TARGET_CACHED_S} s",
        c["cached"]["ttft_s"] < TARGET_CACHED_S,
    )
    rep.add("(c) state file on disk", f"{size / 1e6:.1f} MB", f"{len(c['state_files'])} file(s)")
    return rep


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    sizes = QUICK if args.quick else FULL
    if args.max_tokens:
        sizes = Sizes(**{**asdict(sizes), "max_tokens": args.max_tokens})
    if args.repeats:
        sizes = Sizes(**{**asdict(sizes), "repeats": args.repeats})
    model = args.model
    if not model.exists():
        print(f"{model} is missing: creating it", flush=True)
        make_random_smollm3.make(model, tiny=args.quick)
    info = machine(args)
    print(
        f"model {model.name} ({model.stat().st_size / 1e9:.2f} GB) | {info['cpu']} | {info['cores']} cores, "
        f"{args.threads} threads | llama-cpp-python {info['llama_cpp_python']} | n_ctx {args.n_ctx} | "
        f"load {info['loadavg_start']}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="smoltui-bench-"))
    results: dict[str, Any] = {
        "machine": info,
        "model": str(model),
        "n_ctx": args.n_ctx,
        "sizes": asdict(sizes),
    }
    started = time.perf_counter()
    try:
        vocab = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)

        def count_vocab(text: str) -> int:
            return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))

        user = filler(sizes.first_user_tokens, count_vocab, seed=1, lead="Please summarise the following notes. ")
        print("(a) first turn: raw llama-cpp-python vs our backend", flush=True)
        results["first_turn"] = await bench_first_turn(model, args, sizes, user, work)
        print("(b) follow-up in a long conversation", flush=True)
        results["followup"] = await bench_followup(model, args, sizes, count_vocab, work)
        print("(c) system prompt state cached on disk", flush=True)
        results["cached_system"] = await bench_cached_system(model, args, sizes, count_vocab, work)
        vocab.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", type=Path, help="GGUF to benchmark (default: the random SmolLM3-3B-shaped Q4_K_M)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-ctx", type=int, default=None, help="context size (default 4096; --quick: 1024)")
    ap.add_argument(
        "--quick", action="store_true", help="tiny model, small sizes: an end-to-end check in seconds"
    )
    ap.add_argument("--max-tokens", type=int, default=None, help="decoded tokens per reply in (a)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per side in (a)")
    ap.add_argument("--json", type=Path, default=OUT_JSON)
    args = ap.parse_args(argv)
    if args.model is None:
        args.model = make_random_smollm3.TINY_OUT if args.quick else make_random_smollm3.DEFAULT_OUT
    if args.n_ctx is None:
        args.n_ctx = 1024 if args.quick else 4096

    results = asyncio.run(run(args))
    report = build_report(results)
    results["table"] = [asdict(r) for r in report.rows]
    m = results["machine"]
    print()
    print(
        f"smoltui llama.cpp backend vs raw llama-cpp-python {m['llama_cpp_python']} | {args.model.name} | "
        f"{m['cpu']} | {m['cores']} cores, {m['threads']} threads | load {m['loadavg_start']} -> {m['loadavg_end']}"
    )
    report.print()
    a = results["first_turn"]
    if not a["same_output_text"]:
        print("note: our backend's reply text differs from raw greedy decoding (see JSON)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\nJSON: {args.json}  ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
