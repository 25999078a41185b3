"""Decode speed of SmolLM3-3B's shape on a GPU through the transformers backend's decode loop.

One run on a lent GPU machine, at most ~240 s all told (``--budget``, default 230 s of work after the
imports); random weights of the exact SmolLM3-3B shape are built on the GPU (nothing downloaded). Each
configuration decodes greedy tokens after a 128-token prompt, batch 1: a warm-up reply (which compiles
or captures), then up to 2 timed replies, each from ``session.reset()`` as the backend's replies are.
Most important first, each with its own time cap, token cap and try/except:

    bf16 static compile          the backend's fast path (compile time reported apart)
    nf4 static cuda_graph        bitsandbytes 4-bit, the decode step captured by hand
    bf16 static cuda_graph
    bf16 eager                   DynamicCache, the backend's default path          (64 tokens)
    nf4 eager                                                                      (64 tokens)
    bf16 eager cudnn             diagnostic: bf16 eager with cuDNN attention allowed (torch's own
                                 choice), to show the per-shape plan cost it avoids  (24 tokens)
    int8 threshold0 cuda_graph   bitsandbytes LLM.int8 without the outlier path
    int8 eager                   LLM.int8, threshold 6 (the outlier path)          (64 tokens)

The decode loop is smoltui.backends.transformers_decode (DecodeSession.prefill/step and the sampler),
so the figures are the backend's. Device-to-device copy bandwidth gives each dtype's upper bound:
bytes read per token (the weights) / bandwidth. $OUT/gpu_decode.json is rewritten after every
configuration, so a run cut short keeps what it measured.

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_decode.py            # the GPU run; JSON to $OUT/gpu_decode.json
    python3 benchmarks/gpu_decode.py --smoke                       # the same call sequence on CPU, tiny model

``--smoke`` runs every configuration in the same order with the same calls (warm-up, timed repeats,
reset between them, the save / from_pretrained reload): on the CPU a CUDA graph becomes the plain static
cache, bitsandbytes is left out, and the static cache is made to hold inference tensors as it does on
a GPU (tests/tiny_smollm3.gpu_like_static_cache), so a bug of the GPU call sequence shows there first.
Needs only torch, transformers (+ accelerate, bitsandbytes for nf4/int8), jinja2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smoltui.backends.transformers_decode import (  # noqa: E402
    DecodeSession,
    Sampling,
    cache_keyword,
    sample,
)

# SmolLM3-3B's config numbers live in one place (importing them costs no torch).
from smoltui.benchmarking.synthetic_hf import SMOLLM3_3B  # noqa: E402

TINY = {
    **SMOLLM3_3B,
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "no_rope_layers": [1, 0],
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}
GREEDY = Sampling(temperature=0.0)
T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:6.1f}s] {message}", flush=True)


def elapsed() -> float:
    return time.perf_counter() - T0


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def build_model(spec: dict[str, Any], device: Any, dtype: Any) -> Any:
    import torch
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    config = SmolLM3Config(**spec)
    config.layer_types = ["full_attention"] * config.num_hidden_layers
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = SmolLM3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def weight_bytes(model: Any) -> int:
    """Bytes a decode step reads: every parameter and buffer once (tied tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)  # bitsandbytes 4-bit: absmax & co
        if state is not None and getattr(state, "absmax", None) is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    # The embedding lookup reads one row; when the lm_head is tied to it, the matrix is read in full
    # once anyway (by the lm_head), so nothing to subtract. An untied embedding would be read once a row.
    embed = model.get_input_embeddings().weight
    if (
        model.get_output_embeddings() is None
        or model.get_output_embeddings().weight.data_ptr() != embed.data_ptr()
    ):
        total -= embed.numel() * embed.element_size()
    return total


def copy_bandwidth(device: Any, size_mb: int) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    import torch

    n = size_mb * 1024 * 1024 // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            dst.copy_(src)
        sync(device)
        best = min(best, (time.perf_counter() - start) / 10)
    del src, dst
    return 2 * n * 2 / best


def decode_once(
    session: DecodeSession, prompt: list[int], new_tokens: int, budget_s: float
) -> dict[str, Any]:
    """One reply: reset (outside inference mode, as the backend does), prefill the prompt, greedy decode."""
    device = session.device
    session.reset()
    sync(device)
    start = time.perf_counter()
    logits = session.prefill(prompt)
    token = sample(logits, GREEDY, prompt, None)
    sync(device)
    first = time.perf_counter()
    history = list(prompt) + [token]
    done = 1
    while done < new_tokens and time.perf_counter() - first < budget_s:
        logits = session.step(token)
        token = sample(logits, GREEDY, history, None)  # .item(): syncs every token, as the backend does
        history.append(token)
        done += 1
    end = time.perf_counter()
    decode_s = end - first
    return {
        "tokens": history[len(prompt) :],
        "ttft_s": first - start,
        "decoded": done - 1,
        "decode_s": decode_s,
        "tok_s": (done - 1) / decode_s if decode_s > 0 else 0.0,
    }


def measure(
    name: str,
    model: Any,
    mode: str,
    args: argparse.Namespace,
    prompt: list[int],
    bandwidth: float,
    results: dict[str, Any],
    *,
    budget_s: float,
    new_tokens: int,
    runs: int,
    extra: dict[str, Any] | None = None,
    ref_key: str = "bf16",
    session_kwargs: dict[str, Any] | None = None,
) -> None:
    """Warm up (compiling / capturing), then the best of ``runs`` replies; everything lands in results[name]."""
    record: dict[str, Any] = {"mode": mode, **(extra or {})}
    results[name] = record
    started = time.perf_counter()
    session = None
    say(f"{name}: start (mode {mode}, budget {budget_s:.0f}s, {new_tokens} tokens x {runs})")
    try:
        session = DecodeSession(model, mode=mode, max_context=args.max_context, **(session_kwargs or {}))  # type: ignore[arg-type]
        warm = decode_once(session, prompt, min(args.warmup_tokens, new_tokens), budget_s)
        record["warmup_s"] = round(time.perf_counter() - started, 2)
        record["warmup_tok_s"] = round(warm["tok_s"], 2)
        record["compile_or_capture_s"] = round(session.compile_s, 2)
        record["mode_used"] = session.mode  # "static" when a CUDA graph capture fell back to eager
        say(
            f"{name}: warm-up {record['warmup_s']}s (compile/capture {session.compile_s:.1f}s), {warm['tok_s']:.1f} tok/s"
        )
        done: list[dict[str, Any]] = []
        for _ in range(runs):
            left = budget_s - (time.perf_counter() - started)
            if done and left < 1.2 * done[-1]["decode_s"] + 1:
                break
            done.append(decode_once(session, prompt, new_tokens, max(left, 3.0)))
            say(
                f"{name}: run {len(done)}: {done[-1]['decoded']} tokens, {done[-1]['tok_s']:.1f} tok/s, ttft {done[-1]['ttft_s'] * 1000:.0f} ms"
            )
        best = max(done, key=lambda r: r["tok_s"])
        # Greedy tokens against the first configuration's of the same weights: a broken cache or graph
        # shows up at once (kernels differ in rounding, so long agreement, not full, is healthy).
        references = results.setdefault("reference_tokens", {})
        reference = references.setdefault(ref_key, best["tokens"][:64])
        record["agrees_with_reference"] = next(
            (i for i, (a, b) in enumerate(zip(reference, best["tokens"], strict=False)) if a != b),
            min(len(reference), len(best["tokens"])),
        )
        record.update(
            tok_s=round(best["tok_s"], 2),
            decoded=best["decoded"],
            ttft_ms=round(best["ttft_s"] * 1000, 1),
            runs=[round(r["tok_s"], 2) for r in done],
        )
        wb = weight_bytes(model)
        record["weight_gb"] = round(wb / 1e9, 3)
        if bandwidth > 0:
            bound = bandwidth / wb
            record["bound_tok_s"] = round(bound, 1)
            record["of_bound"] = round(best["tok_s"] / bound, 3)
    except Exception as error:  # one configuration failing never loses the others
        record["error"] = f"{type(error).__name__}: {error}"[:500]
        say(f"{name}: FAILED {record['error']}")
        traceback.print_exc()
    finally:
        record["wall_s"] = round(time.perf_counter() - started, 1)
        del session
        gc.collect()
        if args.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def loop_overhead(model: Any, prompt: list[int], tokens: int = 48) -> dict[str, float]:
    """Per-token cost of the decode loop around the model (smoke run), medians over the tokens.

    ``loop``: DecodeSession.step + sample, as the benchmark and the backend call them; ``bare``: the
    same forward passes called directly, argmax of the last row.
    """
    import statistics

    import torch
    from transformers import DynamicCache

    session = DecodeSession(model, mode="dynamic", max_context=len(prompt) + tokens + 8)
    kw = cache_keyword(model)
    loop: list[float] = []
    bare: list[float] = []
    for _ in range(3):
        session.reset()
        token = sample(session.prefill(prompt), GREEDY, prompt, None)
        history = [*prompt, token]
        for _ in range(tokens):
            start = time.perf_counter()
            token = sample(session.step(token), GREEDY, history, None)
            loop.append(time.perf_counter() - start)
            history.append(token)
        try:
            cache = DynamicCache(config=model.config)
        except TypeError:
            cache = DynamicCache()
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([prompt]), use_cache=True, logits_to_keep=1, **{kw: cache})
            token = int(out.logits[0, -1].argmax())
            for i in range(tokens):
                start = time.perf_counter()
                out = model(
                    input_ids=torch.tensor([[token]]),
                    position_ids=torch.tensor([[len(prompt) + i]]),
                    use_cache=True,
                    logits_to_keep=1,
                    **{kw: cache},
                )
                token = int(out.logits[0, -1].argmax())
                bare.append(time.perf_counter() - start)
    return {
        "loop_ms": statistics.median(loop) * 1000,
        "bare_forward_ms": statistics.median(bare) * 1000,
    }


class _DropMatMul8bitCast(logging.Filter):
    """bitsandbytes logs "MatMul8bitLt: inputs will be cast ..." at every int8 matmul (74,089 lines a run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast" not in record.getMessage()


def load_saved(folder: Path, kind: str, device: Any, dtype: Any, *, quantize: bool = True) -> Any:
    """The saved random model, loaded back through from_pretrained (quantized by bitsandbytes for nf4/int8)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": dtype}
    if not quantize:
        pass  # the smoke run: the same from_pretrained path, without bitsandbytes
    elif kind == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    elif kind.startswith("int8"):
        threshold = 0.0 if kind == "int8-t0" else 6.0
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=threshold)
    if device.type == "cuda":
        kwargs["device_map"] = {"": device.index or 0}
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()


def print_table(results: dict[str, Any], bandwidth: float) -> None:
    print()
    print(f"copy bandwidth: {bandwidth / 1e9:,.0f} GB/s")
    print(
        f"{'configuration':<28} {'tok/s':>8} {'warm-up':>8} {'bound':>8} {'of bound':>8} {'compile':>8} {'ttft ms':>8} {'agree':>6}  note"
    )
    for name, r in results.items():
        if not isinstance(r, dict) or "mode" not in r:
            continue
        note = (
            r.get("error")
            or r.get("skipped")
            or r.get("note")
            or ("fell back to eager" if r.get("mode_used") == "static" and r["mode"] == "cuda_graph" else "")
        )
        print(
            f"{name:<28} {r.get('tok_s', '-')!s:>8} {r.get('warmup_tok_s', '-')!s:>8} {r.get('bound_tok_s', '-')!s:>8} {r.get('of_bound', '-')!s:>8} "
            f"{r.get('compile_or_capture_s', '-')!s:>8} {r.get('ttft_ms', '-')!s:>8} {r.get('agrees_with_reference', '-')!s:>6}  {str(note)[:90]}"
        )
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model on CPU: the same call sequence in a minute or two"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=230.0,
        help="seconds for the whole run, imports included (default 230)",
    )
    parser.add_argument(
        "--new-tokens", type=int, default=128, help="tokens per timed reply (fast configurations)"
    )
    parser.add_argument("--slow-tokens", type=int, default=64, help="tokens per timed reply (eager, int8)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--warmup-tokens", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2, help="timed replies after the warm-up (default 2)")
    parser.add_argument(
        "--max-context", type=int, default=2048, help="static cache size (the backend's max_context)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated configuration names to run (default: all)"
    )
    parser.add_argument(
        "--out", default=os.environ.get("OUT", ""), help="folder for gpu_decode.json (default $OUT)"
    )
    args = parser.parse_args(argv)

    logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DropMatMul8bitCast())
    warnings.filterwarnings("ignore", message=".*inputs will be cast from.*")

    import torch
    import transformers

    cuda = torch.cuda.is_available() and not args.smoke
    args.device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    spec = TINY if args.smoke else SMOLLM3_3B
    dtype = torch.bfloat16 if cuda else torch.float32
    if args.smoke:
        args.new_tokens = min(args.new_tokens, 32)
        args.slow_tokens = min(args.slow_tokens, 24)
    results: dict[str, Any] = {
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "smoke": args.smoke,
            "new_tokens": args.new_tokens,
            "slow_tokens": args.slow_tokens,
            "runs": args.runs,
            "prompt_tokens": args.prompt_tokens,
            "max_context": args.max_context,
            "dtype": str(dtype),
            "budget_s": args.budget,
        }
    }
    try:
        import bitsandbytes

        results["env"]["bitsandbytes"] = bitsandbytes.__version__
    except Exception as error:  # noqa: BLE001 (missing, or its CUDA library failed to load)
        results["env"]["bitsandbytes"] = f"unavailable: {type(error).__name__}: {error}"[:200]
    say(f"env: {results['env']}")

    def save() -> None:
        if args.out:
            path = Path(args.out) / "gpu_decode.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2))

    only = {n.strip() for n in args.only.split(",") if n.strip()}

    def left() -> float:
        return args.budget - elapsed()

    with contextlib.ExitStack() as stack:
        if args.smoke:
            # On a GPU the static cache's counters are inference tensors; make them so here too.
            from tests.tiny_smollm3 import gpu_like_static_cache

            stack.enter_context(gpu_like_static_cache())
        run_all(args, spec, dtype, cuda, results, save, only, left)
    results["env"]["total_s"] = round(elapsed(), 1)
    save()
    print_table(results, results["env"].get("copy_bandwidth_gb_s", 0.0) * 1e9)
    say("done" + (f"; wrote {Path(args.out) / 'gpu_decode.json'}" if args.out else ""))
    return 0


# (name, weights, mode, cap in seconds, fast: --new-tokens else --slow-tokens, runs; 0: --runs)
# Most important first. "bf16" is the model built in memory; the others are loaded from its saved copy.
CONFIGS: list[tuple[str, str, str, float, bool, int]] = [
    ("bf16 static compile", "bf16", "compile", 100, True, 0),
    ("nf4 static cuda_graph", "nf4", "cuda_graph", 25, True, 0),
    ("bf16 static cuda_graph", "bf16", "cuda_graph", 20, True, 0),
    ("bf16 eager", "bf16", "dynamic", 25, False, 0),
    ("nf4 eager", "nf4", "dynamic", 20, False, 0),
    ("bf16 eager cudnn", "bf16", "dynamic-cudnn", 10, False, 1),
    ("int8 threshold0 cuda_graph", "int8-t0", "cuda_graph", 20, True, 0),
    ("int8 eager", "int8", "dynamic", 25, False, 0),
]


def run_all(
    args: argparse.Namespace,
    spec: dict[str, Any],
    dtype: Any,
    cuda: bool,
    results: dict[str, Any],
    save: Any,
    only: set[str],
    left: Any,
) -> None:
    import torch

    bandwidth = 0.0
    try:
        bandwidth = copy_bandwidth(args.device, 64 if args.smoke else 1024)
        results["env"]["copy_bandwidth_gb_s"] = round(bandwidth / 1e9, 1)
        say(f"copy bandwidth {bandwidth / 1e9:,.0f} GB/s")
    except Exception as error:
        say(f"bandwidth: FAILED {error}")

    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, spec["vocab_size"], (args.prompt_tokens,), generator=generator).tolist()

    configs = [c for c in CONFIGS if not only or c[0] in only]
    if not configs:
        return
    say("building the model (random weights)")
    models: dict[str, Any] = {"bf16": build_model(spec, args.device, dtype)}
    results["env"]["params"] = sum(p.numel() for p in models["bf16"].parameters())
    say(
        f"built: {results['env']['params'] / 1e9:.3f} B parameters, {weight_bytes(models['bf16']) / 1e9:.2f} GB"
    )
    if args.smoke:
        overhead = loop_overhead(models["bf16"], prompt[:32])
        results["env"]["loop_overhead"] = {k: round(v, 4) for k, v in overhead.items()}
        say(
            f"per token on CPU (tiny model): decode loop {overhead['loop_ms']:.3f} ms, bare forward "
            f"{overhead['bare_forward_ms']:.3f} ms: the loop adds {overhead['loop_ms'] - overhead['bare_forward_ms']:+.3f} ms"
        )

    bnb_ok = not results["env"]["bitsandbytes"].startswith("unavailable")
    load_errors: dict[str, str] = {}
    load_times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="smollm3-random-") as tmp:
        folder = Path(tmp)
        saved = False

        def weights(kind: str) -> Any:
            """The model for ``kind``; loads it (freeing the quantized ones no configuration still needs)."""
            nonlocal saved
            if kind in models:
                return models[kind]
            if kind in load_errors:
                raise RuntimeError(load_errors[kind])
            if not cuda and not args.smoke:
                raise RuntimeError("bitsandbytes needs CUDA")
            if cuda and not bnb_ok:
                raise RuntimeError(f"bitsandbytes {results['env']['bitsandbytes']}")
            if not saved:
                say("saving the random model for from_pretrained")
                models["bf16"].save_pretrained(folder)
                saved = True
                say("saved")
            try:
                say(f"loading {kind}")
                start = time.perf_counter()
                models[kind] = load_saved(folder, kind, args.device, dtype, quantize=not args.smoke)
                load_times[kind] = round(time.perf_counter() - start, 1)
                say(f"loaded {kind} in {load_times[kind]}s: {weight_bytes(models[kind]) / 1e9:.2f} GB")
            except Exception as error:
                traceback.print_exc()
                load_errors[kind] = f"load: {type(error).__name__}: {error}"[:500]
                raise RuntimeError(load_errors[kind]) from None
            return models[kind]

        for index, (name, kind, mode, cap, fast, runs) in enumerate(configs):
            # free the weights no later configuration uses (bf16 and nf4 stay until their last one)
            for loaded in list(models):
                if all(c[1] != loaded for c in configs[index:]):
                    say(f"freeing {loaded}")
                    del models[loaded]
                    gc.collect()
                    if cuda:
                        torch.cuda.empty_cache()
            session_kwargs: dict[str, Any] = {}
            run_mode = mode
            if mode == "dynamic-cudnn":
                run_mode, session_kwargs = "dynamic", {"cudnn_attention": True}
            note = ""
            if run_mode == "cuda_graph" and not cuda:
                run_mode, note = "static", "CPU stand-in: static eager"
            if left() < 15 + (25 if kind not in models else 0):
                results[name] = {"mode": mode, "skipped": "out of time"}
                save()
                continue
            try:
                model = weights(kind)
            except Exception as error:
                results[name] = {"mode": mode, "error": str(error)[:500]}
                save()
                continue
            extra = {"load_s": load_times[kind]} if kind in load_times else {}
            if note:
                extra["note"] = note
            measure(
                name,
                model,
                run_mode,
                args,
                prompt,
                bandwidth,
                results,
                budget_s=max(5.0, min(cap, left() - 10)),
                new_tokens=args.new_tokens if fast else args.slow_tokens,
                runs=runs or args.runs,
                extra=extra,
                ref_key=kind,
                session_kwargs=session_kwargs,
            )
            model = None  # so that freeing the weights below really frees them
            results[name]["mode"] = mode
            save()
        models.clear()
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())
