"""Where a decode step's GPU time goes, for SmolLM3-3B's shape in bf16: the run that says why
``gpu_decode.py``'s compiled and CUDA-graph decode reach only ~18% of the memory-bandwidth bound.

What ``gpu_decode.py`` showed on an H200: bf16 in a hand-captured CUDA graph 110 tok/s, nf4 in one
114 tok/s, although nf4 reads a third of the bytes. A graph replay has no Python in it, so ~9 ms of
GPU work per token does not scale with the weights. This script measures, in about 90 s of GPU time:

1. ``gemv``: one bf16 (1 x 2048) @ (2048 x 11008) matmul, repeated: how close cuBLAS's matrix-vector
   product gets to the copy bandwidth (the weights' share of a step, were nothing else there).
2. ``replay``: the captured decode step alone, timed with CUDA events, for a static cache of 2048
   and of 256 slots, with SDPA attention and with transformers' eager attention. If the cache's
   length moves the time, attention and masking over the whole static cache are the cost.
3. ``loop``: the same graphs driven as the backend drives them (``DecodeSession.step`` + ``sample``,
   a sync per token): the host's share is ``loop - replay``.
4. ``kernels``: torch.profiler over a few eager static-cache steps (the kernels a graph replays),
   the top kernels by GPU time, so the slow one has a name.

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_profile.py        # on the GPU; JSON to $OUT/gpu_profile.json
    python3 benchmarks/gpu_profile.py --smoke                   # the same calls on CPU, tiny model

On the CPU a CUDA graph becomes the static cache run eagerly and events become wall-clock time, so
``--smoke`` checks the call sequence, not the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_decode import (  # noqa: E402
    GREEDY,
    TINY,
    build_model,
    copy_bandwidth,
    say,
    sync,
    weight_bytes,
)
from smoltui.backends.transformers_decode import DecodeSession, sample  # noqa: E402
from smoltui.benchmarking.synthetic_hf import SMOLLM3_3B  # noqa: E402


def gpu_ms(device: Any, fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``fn`` on the device (CUDA events), or of wall-clock time on the CPU."""
    import torch

    times: list[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def gemv(device: Any, dtype: Any, hidden: int, intermediate: int, repeats: int) -> dict[str, float]:
    import torch

    weight = torch.randn(hidden, intermediate, dtype=dtype, device=device)
    x = torch.randn(1, hidden, dtype=dtype, device=device)
    for _ in range(3):
        x @ weight
    sync(device)
    ms = gpu_ms(device, lambda: [x @ weight for _ in range(20)], repeats) / 20
    return {"ms": round(ms, 4), "gb_s": round(weight.numel() * weight.element_size() / ms / 1e6, 1)}


@contextlib.contextmanager
def attention(model: Any, implementation: str) -> Iterator[None]:
    previous = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def replay_and_loop(
    model: Any, prompt: list[int], max_context: int, mode: str, steps: int
) -> dict[str, float]:
    """ms per decode step: the step alone (``replay``), and step + sample as the backend runs them (``loop``)."""
    import torch

    session = DecodeSession(model, mode=mode, max_context=max_context)  # type: ignore[arg-type]
    session.reset()
    token = sample(session.prefill(prompt), GREEDY, prompt, None)
    history = [*prompt, token]
    for _ in range(3):  # capture (cuda_graph) and warm up
        token = sample(session.step(token), GREEDY, history, None)
        history.append(token)
    device = session.device
    position = len(session.tokens)

    def one_step() -> None:
        # The same slot every time: the cache's length, and so the work, stays that of this position.
        session._set_length(position)
        if session.mode == "cuda_graph":
            with torch.inference_mode():
                session._graph.replay()
        else:
            session.step(token)

    replay = gpu_ms(device, one_step, steps)
    session._set_length(position)
    history = history[: position + 1]
    started = time.perf_counter()
    for _ in range(steps):
        token = sample(session.step(token), GREEDY, history, None)
        history.append(token)
    sync(device)
    loop = (time.perf_counter() - started) * 1000 / steps
    return {"replay_ms": round(replay, 3), "loop_ms": round(loop, 3), "mode_used": session.mode}


def kernels(model: Any, prompt: list[int], max_context: int, steps: int, top: int) -> list[dict[str, Any]]:
    """The top kernels (or CPU ops on the CPU) by device time over ``steps`` eager static-cache steps."""
    from torch.profiler import ProfilerActivity, profile

    session = DecodeSession(model, mode="static", max_context=max_context)
    token = sample(session.prefill(prompt), GREEDY, prompt, None)
    session.step(token)
    cuda = session.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            session.step(token)
        sync(session.device)
    rows = []
    for event in prof.key_averages():
        # On CUDA a kernel's own time is its self device time (CPU ops hold none of their own);
        # on the CPU the op's self CPU time.
        own_us = getattr(event, "self_device_time_total", 0) if cuda else event.self_cpu_time_total
        rows.append(
            {
                "name": event.key[:90],
                "us_per_step": round(own_us / steps, 1),
                "calls_per_step": round(event.count / steps, 2),
            }
        )
    rows.sort(key=lambda r: r["us_per_step"], reverse=True)
    total = sum(r["us_per_step"] for r in rows)
    return [{"name": "(all)", "us_per_step": round(total, 1), "calls_per_step": 0.0}, *rows[:top]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU: the same calls")
    parser.add_argument("--steps", type=int, default=50, help="decode steps per timing (default 50)")
    parser.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for gpu_profile.json")
    args = parser.parse_args(argv)

    import torch
    import transformers

    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    spec = TINY if args.smoke else SMOLLM3_3B
    dtype = torch.bfloat16 if cuda else torch.float32
    steps = min(args.steps, 10) if args.smoke else args.steps
    results: dict[str, Any] = {
        "env": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "smoke": args.smoke,
        }
    }

    def save() -> None:
        if args.out:
            path = Path(args.out) / "gpu_profile.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2))

    def attempt(name: str, fn: Callable[[], Any]) -> None:
        started = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as error:  # one measurement failing never loses the others
            traceback.print_exc()
            results[name] = {"error": f"{type(error).__name__}: {error}"[:400]}
        say(f"{name} ({time.perf_counter() - started:.1f}s): {json.dumps(results[name])[:600]}")
        save()

    attempt("copy_bandwidth_gb_s", lambda: round(copy_bandwidth(device, 64 if args.smoke else 1024) / 1e9, 1))
    attempt("gemv", lambda: gemv(device, dtype, spec["hidden_size"], spec["intermediate_size"], steps))
    say("building the model (random weights)")
    model = build_model(spec, device, dtype)
    results["weight_gb"] = round(weight_bytes(model) / 1e9, 3)
    bandwidth = results["copy_bandwidth_gb_s"]
    if isinstance(bandwidth, float):
        results["bound_ms"] = round(results["weight_gb"] / bandwidth * 1000, 3)
    prompt = torch.randint(3, spec["vocab_size"], (128,), generator=torch.Generator().manual_seed(1)).tolist()
    mode = "cuda_graph" if cuda else "static"
    for implementation in ("sdpa", "eager"):
        for max_context in (2048, 256):
            def run(implementation: str = implementation, max_context: int = max_context) -> dict[str, float]:
                with attention(model, implementation):
                    return replay_and_loop(model, prompt, max_context, mode, steps)

            attempt(f"step {implementation} ctx{max_context}", run)
            if cuda:
                torch.cuda.empty_cache()
    attempt("kernels sdpa ctx2048", lambda: kernels(model, prompt, 2048, min(steps, 10), 25))
    save()
    say("done" + (f"; wrote {Path(args.out) / 'gpu_profile.json'}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
