"""Does watching a stream slow the model? Decode tok/s of one reply, five ways, in one run:

a. raw llama-cpp-python (``Llama.generate`` on the tokens our backend renders);
b. our llama.cpp backend alone (``backend.stream``);
c. headless ``smoltui chat --json`` (a subprocess: the CLI, the core, the store);
d. the TUI's chat streaming the reply (a real ``SmolApp`` under ``run_test``, the same loaded model);
e. the TUI's run view streaming an LLM task of a workflow (same app, same model).

    .venv/bin/python benchmarks/bench_stream.py [--model PATH] [--threads 2] [--tokens 96] [--repeats 3]
    .venv/bin/python benchmarks/bench_stream.py --quick      # the tiny model: checks the script end to end

The default model is the random-weight SmolLM3-3B-shaped Q4_K_M of ``make_random_smollm3.py``
(built if missing: ~5 minutes). Random weights never stop, so every reply is cut at ``--tokens``.
The five modes are interleaved, ``--repeats`` times, and medians compared (the machine is shared
and noisy). Targets: (b) and (c) >= 0.95x (a); (d) and (e) >= 0.90x (c).
Results: a table on stdout and ``benchmarks/out/bench_stream.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for entry in (str(REPO), str(HERE), str(REPO / "tests")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import bench_llama  # noqa: E402
import make_random_smollm3  # noqa: E402

from smoltui.backends.base import CancelToken, ChatMessage, Finished, GenerationParams  # noqa: E402
from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings  # noqa: E402

OUT_JSON = HERE / "out" / "bench_stream.json"
MODES = ("raw", "backend", "headless", "tui_chat", "run_view")
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
TARGET_BACKEND = 0.95
TARGET_VIEWS = 0.90


def gen_params(tokens: int) -> GenerationParams:
    return GenerationParams(max_tokens=tokens, temperature=0.0, seed=0)


# -- the five ways ---------------------------------------------------------------------------------


def raw(backend: LlamaCppBackend, tokens: int) -> float:
    prepared = backend.prepare([ChatMessage("user", PROMPT)], gen_params(tokens))
    return bench_llama.raw_run(backend.llama, prepared.tokens, tokens)["decode_tok_s"]


async def ours(backend: LlamaCppBackend, tokens: int) -> float:
    async for event in backend.stream([ChatMessage("user", PROMPT)], gen_params(tokens), CancelToken()):
        if isinstance(event, Finished):
            return event.stats.decode_tok_s
    raise RuntimeError("the stream ended without stats")


def headless(model: Path, threads: int, tokens: int, home: Path) -> float:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[chat]\ntemperature = 0.0\nseed = 0\n")  # what the others sample with
    env = {**os.environ, "SMOLTUI_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "smoltui", "chat", "--model", str(model), "--threads", str(threads), "--n-ctx", "1024",
         "--max-tokens", str(tokens), "--json", "-p", PROMPT],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"smoltui chat failed: {done.stderr.strip()[-400:]}")
    return float(json.loads(done.stdout)["stats"]["decode_tok_s"])


class Recorder:
    """Wraps the backend's stream to keep the stats of every generation (the run view's LLM task
    reports none of its own to the screen)."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.stats: list[float] = []
        real: Callable[..., AsyncIterator[Any]] = backend.stream

        async def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async for event in real(*args, **kwargs):
                if isinstance(event, Finished):
                    self.stats.append(event.stats.decode_tok_s)
                yield event

        backend.stream = stream  # type: ignore[method-assign]


async def tui_runs(backend: LlamaCppBackend, recorder: Recorder, tokens: int, repeats: int, work: Path,
                   between: Callable[[], Any]) -> dict[str, list[float]]:
    """(d) and (e) for each repeat; ``between`` runs the other modes so everything interleaves."""
    from tui.harness import build_app, wait_until

    from smoltui.config import Config
    from smoltui.orchestrator.events import ReplyFinished, RunFinished
    from smoltui.orchestrator.store import Store
    from smoltui.screens.run_view import RunScreen

    flow = work / "story.yaml"
    flow.write_text(
        "workflow:\n  id: story\n  name: story\n  tasks:\n"
        "    - id: write\n      type: llm_task\n"
        f"      prompt: {json.dumps(PROMPT)}\n      outputs: [text]\n")
    config = Config()
    config.chat.temperature = 0.0
    store = await Store.open(work / "smoltui.db")
    app = build_app(store, backend, work, config=config)
    app.core.chat.settings.params = gen_params(tokens)
    app.core.runs.params = gen_params(tokens)
    found: dict[str, list[float]] = {"tui_chat": [], "run_view": []}
    ended: asyncio.Queue[Any] = asyncio.Queue()
    # Waits on the bus, not by polling: a test's wait_until wakes the app 100 times a second,
    # which is work no user's app does and which the model would pay for.
    app.core.bus.subscribe(lambda e: ended.put_nowait(e) if isinstance(e, ReplyFinished | RunFinished) else None)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.core.model.ready.is_set(), "the model", timeout=120)
        for _ in range(repeats):
            await between()
            screen = app.screen
            screen.prompt.load_text(PROMPT)
            await pilot.press("enter")
            while not isinstance(await ended.get(), ReplyFinished):
                pass
            found["tui_chat"].append(recorder.stats[-1])
            await pilot.press("ctrl+n")  # a fresh chat each time: the same prompt, the same work
            run_id = await app.core.runs.launch(flow)
            await app.push_screen(RunScreen(app.core, run_id))
            while not isinstance(await ended.get(), RunFinished):
                pass
            found["run_view"].append(recorder.stats[-1])
            app.pop_screen()
            await wait_until(pilot, lambda s=screen: app.screen is s, "the chat screen")
    await store.close()
    return found


# -- the run ---------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    model = args.model or (make_random_smollm3.TINY_OUT if args.quick else make_random_smollm3.DEFAULT_OUT)
    if not model.exists():
        print(f"building {model} …", file=sys.stderr, flush=True)
        make_random_smollm3.make(model, tiny=args.quick)
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    backend = LlamaCppBackend(model, LlamaSettings(n_ctx=1024, n_threads=args.threads, prompt_cache_dir=None))
    recorder = Recorder(backend)
    results: dict[str, list[float]] = {mode: [] for mode in MODES}

    async def between() -> None:
        # On the backend's own thread, as bench_llama does: llama.cpp's OpenMP workers belong to the
        # thread that calls it, and a second calling thread leaves two teams fighting for 2 cores.
        loop = asyncio.get_running_loop()
        results["raw"].append(await loop.run_in_executor(backend._executor, raw, backend, args.tokens))
        results["backend"].append(await ours(backend, args.tokens))
        results["headless"].append(await asyncio.to_thread(headless, model, args.threads, args.tokens, work / "h"))
        print(f"  raw {results['raw'][-1]:.2f}  backend {results['backend'][-1]:.2f}  "
              f"headless {results['headless'][-1]:.2f} tok/s", file=sys.stderr, flush=True)

    views = await tui_runs(backend, recorder, args.tokens, args.repeats, work, between)
    results.update(views)
    await backend.close()
    medians = {mode: statistics.median(values) for mode, values in results.items()}
    ratios = {
        "backend/raw": medians["backend"] / medians["raw"],
        "headless/raw": medians["headless"] / medians["raw"],
        "tui_chat/headless": medians["tui_chat"] / medians["headless"],
        "run_view/headless": medians["run_view"] / medians["headless"],
    }
    return {
        "model": str(model), "threads": args.threads, "tokens": args.tokens, "repeats": args.repeats,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "when": time.strftime("%Y-%m-%d %H:%M"),
        "runs": results, "medians": medians, "ratios": ratios,
    }


def table(report: dict[str, Any]) -> str:
    m, r = report["medians"], report["ratios"]
    lines = [
        f"decode tok/s, median of {report['repeats']} (interleaved), {report['tokens']} tokens, "
        f"{report['threads']} threads, OMP_WAIT_POLICY={report['omp_wait_policy']}: {report['model']}",
        f"{'mode':<34}{'tok/s':>8}  {'ratio':>14}  target",
        f"{'(a) raw llama-cpp-python':<34}{m['raw']:>8.2f}",
        f"{'(b) our backend':<34}{m['backend']:>8.2f}  {r['backend/raw']:>8.2f}x raw  >= {TARGET_BACKEND}",
        f"{'(c) headless smoltui chat':<34}{m['headless']:>8.2f}  {r['headless/raw']:>8.2f}x raw  >= {TARGET_BACKEND}",
        f"{'(d) TUI chat streaming':<34}{m['tui_chat']:>8.2f}  {r['tui_chat/headless']:>3.2f}x headless  >= {TARGET_VIEWS}",
        f"{'(e) run view streaming a task':<34}{m['run_view']:>8.2f}  {r['run_view/headless']:>3.2f}x headless  >= {TARGET_VIEWS}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the tiny model, 16 tokens, one repeat")
    ap.add_argument("--out", type=Path, default=OUT_JSON)
    args = ap.parse_args(argv)
    if args.quick:
        args.tokens, args.repeats = 16, 1
    report = asyncio.run(measure(args))
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
