"""Where the time of a first turn and of a cached-system-prompt turn goes (a companion to bench_llama.py).

    .venv/bin/python benchmarks/diagnose_llama.py [--model PATH] [--threads N]

1. cold instance: the first decode of a freshly loaded ``Llama`` (mmap page faults, buffer setup) vs the
   same decode again;
2. one-shot vs split prefill on one warm raw ``Llama``: the whole first-turn prompt in one ``generate``
   vs the system prefix ``eval``'d first, then ``generate`` (what our backend does to save the prefix
   state), with the first tokens each produces;
3. the cached-system-prompt turn of bench (c), timed step by step inside our backend (prepare,
   ``_load_state``, each ``eval``), then a second short message on the same, now warm, instance.

Writes ``benchmarks/out/diagnose_llama.json``. About two minutes on 2 cores for the 3B-shaped model.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_llama as bench  # sets sys.path for smoltui
import make_random_smollm3

from smoltui.backends.base import ChatMessage


def timed(log: list[tuple[str, float, Any]], name: str, fn: Any, describe: Any = None) -> Any:
    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            log.append((name, round(time.perf_counter() - t, 4), describe(*a, **k) if describe else None))

    return wrapper


def first_tokens(llm: Any, tokens: list[int], n: int) -> tuple[float, list[int]]:
    started = time.perf_counter()
    ttft = 0.0
    out: list[int] = []
    gen = llm.generate(tokens, top_k=40, top_p=0.95, min_p=0.05, temp=0.0, repeat_penalty=1.0)
    for token in gen:
        if not out:
            ttft = time.perf_counter() - started
        out.append(int(token))
        if len(out) >= n:
            break
    gen.close()
    return ttft, out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    model: Path = args.model
    results: dict[str, Any] = {"model": str(model), "threads": args.threads, "loadavg_start": os.getloadavg()}
    ns = argparse.Namespace(n_ctx=args.n_ctx, threads=args.threads)
    work = Path(tempfile.mkdtemp(prefix="smoltui-diag-"))

    # 1. cold vs warm first decode
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=args.n_ctx, n_threads=args.threads, n_threads_batch=args.threads,
        n_batch=512, verbose=False,
    )  # fmt: skip
    cold = []
    for _ in range(3):
        llm.reset()
        t = time.perf_counter()
        llm.eval([128011, 882, 198])
        cold.append(round(time.perf_counter() - t, 4))
    results["three_token_eval_s"] = {"first_on_new_instance": cold[0], "then": cold[1:]}
    print("1. 3-token eval on a new instance, then again:", cold, flush=True)

    # 2. one-shot vs split prefill of bench (a)'s prompt, warm instance
    def count(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    user = bench.filler(
        bench.FULL.first_user_tokens, count, seed=1, lead="Please summarise the following notes. "
    )
    messages = [ChatMessage("system", bench.SYSTEM_SHORT), ChatMessage("user", user)]
    probe = await bench.new_backend(model, ns, work / "probe")
    prepared = probe.prepare(messages, bench.params(4))
    await probe.close()
    tokens, prefix = prepared.tokens, prepared.prefix_tokens
    llm.reset()
    one_ttft, one_out = first_tokens(llm, tokens, 4)
    llm.reset()
    t = time.perf_counter()
    llm.eval(tokens[:prefix])
    head_s = time.perf_counter() - t
    rest_ttft, split_out = first_tokens(llm, tokens, 4)
    llm.reset()
    again_ttft, _ = first_tokens(llm, tokens, 4)  # order check: the one-shot run again, after the split one

    def text(out: list[int]) -> str:
        return llm.detokenize(out, special=False).decode("utf-8", "replace")

    results["split_prefill"] = {
        "prompt_tokens": len(tokens),
        "prefix_tokens": prefix,
        "one_shot_ttft_s": round(one_ttft, 3),
        "one_shot_again_ttft_s": round(again_ttft, 3),
        "split_head_eval_s": round(head_s, 3),
        "split_rest_ttft_s": round(rest_ttft, 3),
        "split_total_s": round(head_s + rest_ttft, 3),
        "one_shot_first_tokens": [one_out, text(one_out)],
        "split_first_tokens": [split_out, text(split_out)],
    }
    print("2. split prefill:", results["split_prefill"], flush=True)
    llm.close()

    # 3. cached system prompt, step by step
    vocab = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)

    def count_vocab(text: str) -> int:
        return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    system = bench.filler(
        bench.FULL.system_tokens,
        count_vocab,
        seed=7,
        lead="You are the archive assistant of a small town library. ",
    )
    cache = work / "c-cache"
    first = await bench.new_backend(model, ns, cache)
    saved = await bench.chat(first, [ChatMessage("system", system), ChatMessage("user", "Hello!")], 2)
    await first.close()
    print(f"3. state saved: ttft {saved.stats.ttft_s:.2f}s ({saved.prompt_cache})", flush=True)

    log: list[tuple[str, float, Any]] = []
    second = await bench.new_backend(model, ns, cache)
    second.prepare = timed(log, "prepare", second.prepare)  # type: ignore[method-assign]
    second._load_state = timed(log, "_load_state", second._load_state)  # type: ignore[method-assign]
    second.llama.eval = timed(log, "eval", second.llama.eval, lambda tokens: f"{len(tokens)} tokens")
    steps = {}
    for label, message in (("hit (new instance)", "Which books about rivers do you have?"),
                           ("kv (same instance)", "Which maps of the valley do you have?")):  # fmt: skip
        log.clear()
        reply = await bench.chat(second, [ChatMessage("system", system), ChatMessage("user", message)], 2)
        s = reply.stats
        steps[label] = {
            "ttft_s": round(s.ttft_s, 3),
            "prompt_tokens": s.prompt_tokens,
            "cached_tokens": s.cached_tokens,
            "prompt_cache": reply.prompt_cache,
            "steps": log[:],
        }
        print(
            f"3. {label}: ttft {s.ttft_s:.2f}s, {s.prompt_tokens - s.cached_tokens} new tokens, steps {log}",
            flush=True,
        )
    await second.close()
    system_tokens = count_vocab(system)
    vocab.close()  # only after its last use: llama-cpp-python segfaults on a closed model
    results["cached_system"] = {
        "system_tokens": system_tokens,
        "saved_ttft_s": round(saved.stats.ttft_s, 3),
        **steps,
    }
    results["loadavg_end"] = os.getloadavg()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=make_random_smollm3.DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--json", type=Path, default=bench.OUT_JSON.with_name("diagnose_llama.json"))
    args = ap.parse_args()
    results = asyncio.run(main_async(args))
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
