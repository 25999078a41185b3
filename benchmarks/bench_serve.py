"""Load on one `smoltui serve`, on loopback: many clients following one run's events while chat
completions queue behind the single model.

    .venv/bin/python benchmarks/bench_serve.py [--clients 50] [--completions 20] [--tasks 200]
                                               [--model bundled|scripted] [--max-tokens 16] [--leave 10]

A real server (``python -m smoltui serve --listen 127.0.0.1:0``) in a throwaway home. ``--clients``
followers (each its own HTTP connection, :meth:`ServerClient.events`, every event unfiltered) follow
the bus while a workflow of ``--tasks`` small read-only tasks runs; meanwhile ``--completions``
streaming ``/v1/chat/completions`` requests are sent one after another (each once its bytes are
written) and a prober times ``GET /health`` and ``GET /api/runs`` back to back while the model
decodes. Checks, and exits 1 if one fails:

- no lost or reordered events: each follower's ids are consecutive (the server numbers every bus
  event) with no ``gap``, and every follower saw the same sequence;
- completions served in arrival order: their first tokens, and their ends, come in the order sent;
- a client that goes away never stops a run: ``--leave`` more followers hang up mid-run, and the
  run still ends with every task succeeded;
- memory bounded: the server's RSS (VmRSS) before, at its peak during, and after.

Writes ``benchmarks/out/bench_serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smoltui.paths import Paths  # noqa: E402
from smoltui.server.client import ServerClient, ServerEvent  # noqa: E402
from smoltui.server.locations import read_state, read_token  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "bench_serve.json"


def workflow(tasks: int) -> str:
    lines = ["workflow:", "  id: load", "  name: Load", "  tasks:"]
    for i in range(tasks):
        lines += [f"    - id: t{i:03d}", "      type: tool_call", "      tool: list_dir",
                  "      inputs: {path: \".\"}", f"      outputs: [listing{i:03d}]"]
    return "\n".join(lines) + "\n"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def start_server(env: dict[str, str], paths: Paths, model: str, threads: int,
                       workspace: Path) -> tuple[subprocess.Popen[str], str, str]:
    argv = [sys.executable, "-m", "smoltui", "serve", "--model", model, "--threads", str(threads),
            "--listen", "127.0.0.1:0", "--workspace", str(workspace)]
    server = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    line = await asyncio.to_thread(server.stderr.readline)  # "serving HOME on unix:..." once it answers
    if "serving" not in line:
        server.kill()
        raise RuntimeError(f"the server did not start: {line}{server.stderr.read()}")
    state = read_state(paths)
    token = read_token(paths)
    assert state is not None and state.url and token
    return server, state.url, token


async def follower(url: str, token: str, connected: asyncio.Event, run_id: asyncio.Future[str],
                   seen: list[ServerEvent], *, leave_after: int | None = None) -> None:
    """Every event until the run ends; with ``leave_after``, hang up after that many of the run's
    events instead (a client that goes away mid-run)."""
    async with ServerClient(base_url=url, token=token) as client:
        follow = client.events(on_state=lambda state, _: connected.set() if state == "connected" else None)
        mine = 0
        async for event in follow:
            seen.append(event)
            ours = run_id.done() and event.data.get("run_id") == run_id.result()
            mine += ours
            if (ours and event.kind == "run_finished") or (leave_after is not None and mine >= leave_after):
                break
        await follow.aclose()


async def completion(http: httpx.AsyncClient, index: int, max_tokens: int, sent: asyncio.Event,
                     record: dict[str, Any]) -> None:
    async def trace(name: str, info: dict[str, Any]) -> None:
        if name == "http11.send_request_body.complete":
            record["sent"] = time.monotonic()
            sent.set()

    body = {"model": "smoltui", "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"Count from {index} to {index + 5}."}]}
    request = http.build_request("POST", "/v1/chat/completions", json=body, extensions={"trace": trace})
    response = await http.send(request, stream=True)
    try:
        response.raise_for_status()
        tokens = 0
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"] if "choices" in line else {}
            if delta.get("content"):
                record.setdefault("first_token", time.monotonic())
                tokens += 1
        record["done"] = time.monotonic()
        record["chunks"] = tokens
    finally:
        await response.aclose()


async def prober(url: str, token: str, stop: asyncio.Event, latencies: dict[str, list[float]]) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        while not stop.is_set():
            for path in ("/health", "/api/runs"):
                started = time.perf_counter()
                (await http.get(path)).raise_for_status()
                latencies[path].append((time.perf_counter() - started) * 1000)


async def sample_rss(pid: int, stop: asyncio.Event, samples: list[int]) -> None:
    while not stop.is_set():
        samples.append(rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)  # a sampling period, not a wait for an event


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="smoltui-load-") as scratch:
        home, runtime, workspace = Path(scratch, "home"), Path(scratch, "run"), Path(scratch, "ws")
        runtime.mkdir(mode=0o700)
        workspace.mkdir()
        for i in range(5):
            (workspace / f"file{i}.txt").write_text("x\n")
        flow = Path(scratch, "load.yaml")
        flow.write_text(workflow(args.tasks))
        env = {**os.environ, "SMOLTUI_HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(REPO)}
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)  # where read_state looks for this home's server
        paths = Paths.resolve(home)
        server, url, token = await start_server(env, paths, args.model, args.threads, workspace)
        try:
            return await _measure(args, server.pid, url, token, flow, workspace)
        finally:
            server.terminate()
            await asyncio.to_thread(server.wait, 30)


async def _measure(args: argparse.Namespace, pid: int, url: str, token: str, flow: Path,
                   workspace: Path) -> dict[str, Any]:
    async with ServerClient(base_url=url, token=token, timeout_s=300) as client:
        loaded_at = time.monotonic()
        await client.load_model()
        load_s = time.monotonic() - loaded_at
        rss_before = rss_kib(pid)

        connected = [asyncio.Event() for _ in range(args.clients)]
        run_id: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        streams: list[list[ServerEvent]] = [[] for _ in range(args.clients)]
        followers = [asyncio.create_task(follower(url, token, connected[i], run_id, streams[i]))
                     for i in range(args.clients)]
        leavers = [asyncio.create_task(follower(url, token, asyncio.Event(), run_id, [], leave_after=5))
                   for _ in range(args.leave)]
        await asyncio.gather(*(event.wait() for event in connected))  # every follower sees everything from here

        stop = asyncio.Event()
        samples: list[int] = []
        latencies: dict[str, list[float]] = {"/health": [], "/api/runs": []}
        sampler = asyncio.create_task(sample_rss(pid, stop, samples))
        started = time.monotonic()
        run = await client.launch(flow, concurrency=args.concurrency, workspace=workspace)
        run_id.set_result(run["id"])

        records: list[dict[str, Any]] = [{"index": i} for i in range(args.completions)]
        limits = httpx.Limits(max_connections=args.completions + 5)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=httpx.Timeout(600), limits=limits) as http:
            probing = asyncio.create_task(prober(url, token, stop, latencies))
            completions = []
            for i in range(args.completions):  # one after another: each sent once the previous is written
                sent = asyncio.Event()
                completions.append(asyncio.create_task(completion(http, i, args.max_tokens, sent, records[i])))
                await sent.wait()
            await asyncio.gather(*completions)
            stop.set()
            await probing
        await asyncio.gather(*followers, *leavers)
        elapsed = time.monotonic() - started
        stop.set()
        await sampler
        detail = await client.run(run["id"])
    rss_after = rss_kib(pid)

    sequences = [[(e.id, e.kind, e.data) for e in stream] for stream in streams]
    problems = []
    for n, stream in enumerate(streams):
        ids = [e.id for e in stream]
        if any(e.kind == "gap" for e in stream):
            problems.append(f"follower {n}: a gap (events no longer held)")
        if any(e.id is None for e in stream) or ids != list(range(ids[0], ids[0] + len(ids))):
            problems.append(f"follower {n}: ids not consecutive (lost or reordered events)")
    # Followers connected at slightly different moments: compare from the first id all of them hold.
    common = max(stream[0].id for stream in streams if stream)
    trimmed = [[item for item in sequence if item[0] >= common] for sequence in sequences]
    digests = {hashlib.sha256(json.dumps(t, sort_keys=True).encode()).hexdigest() for t in trimmed}
    if len(digests) != 1:
        problems.append(f"followers saw {len(digests)} different sequences")
    run_events = [e for e in streams[0] if e.data.get("run_id") == run["id"]]
    states = [t["state"] for t in detail["tasks"]]
    if detail["state"] != "succeeded" or states.count("succeeded") != args.tasks:
        problems.append(f"the run ended {detail['state']} with {states.count('succeeded')}/{args.tasks} tasks done")
    first_order = sorted(range(args.completions), key=lambda i: records[i].get("first_token", float("inf")))
    done_order = sorted(range(args.completions), key=lambda i: records[i]["done"])
    if first_order != list(range(args.completions)) or done_order != list(range(args.completions)):
        problems.append(f"completions served out of arrival order: first tokens {first_order}, ends {done_order}")
    waits = [r.get("first_token", r["done"]) - r["sent"] for r in records]
    chunks = sum(r["chunks"] for r in records)
    return {
        "model": args.model, "clients": args.clients, "clients_that_left_mid_run": args.leave, "completions": args.completions, "tasks": args.tasks,
        "max_tokens": args.max_tokens, "model_load_s": round(load_s, 2), "elapsed_s": round(elapsed, 2),
        "events_per_follower": len(streams[0]), "run_events": len(run_events),
        "events_delivered": sum(len(s) for s in streams), "same_sequence_for_all": len(digests) == 1,
        "completion_chunks": chunks, "completion_wait_s": {"first": round(waits[0], 3), "last": round(waits[-1], 3)},
        "served_in_arrival_order": first_order == list(range(args.completions)),
        "api_latency_ms": {path: {"n": len(v), "p50": round(statistics.median(v), 2), "p99": round(percentile(v, 99), 2)}
                           for path, v in latencies.items() if v},
        "rss_mib": {"before": round(rss_before / 1024, 1), "peak_during": round(max(samples) / 1024, 1),
                    "after": round(rss_after / 1024, 1)},
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--completions", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=200, help="tasks in the followed run (each a list_dir call)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model", default="bundled", help="bundled (SmolLM2-135M, really decoding) or scripted")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--leave", type=int, default=10,
                        help="more followers that hang up after 5 of the run's events (the run must go on)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the JSON goes ({OUT.relative_to(REPO)})")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    latency = result["api_latency_ms"]
    rows = [
        ("model", f"{result['model']} (load {result['model_load_s']} s), max_tokens {result['max_tokens']}"),
        ("followers", f"{result['clients']}, {result['events_per_follower']} events each "
                      f"({result['run_events']} from the run of {result['tasks']} tasks); "
                      f"{result['events_delivered']} delivered"),
        ("left mid-run", f"{result['clients_that_left_mid_run']} followers; the run still ended succeeded: "
                         f"{not any('the run ended' in p for p in result['problems'])}"),
        ("lost / reordered", "none" if not any("follower" in p for p in result["problems"]) else "YES"),
        ("same sequence for all", str(result["same_sequence_for_all"])),
        ("completions", f"{result['completions']} ({result['completion_chunks']} content chunks), "
                        f"in arrival order: {result['served_in_arrival_order']}; wait for first token "
                        f"{result['completion_wait_s']['first']} s (1st) .. {result['completion_wait_s']['last']} s (last)"),
        *((f"GET {path}", f"p50 {v['p50']} ms, p99 {v['p99']} ms (n={v['n']})") for path, v in latency.items()),
        ("server RSS", f"{result['rss_mib']['before']} MiB before, {result['rss_mib']['peak_during']} MiB peak, "
                       f"{result['rss_mib']['after']} MiB after"),
        ("wall time", f"{result['elapsed_s']} s"),
    ]
    for name, value in rows:
        print(f"{name:<22} {value}")
    for problem in result["problems"]:
        print(f"FAIL: {problem}")
    print(f"written: {args.out}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
