"""Does `smoltui web` draw the chat screen in a real browser? Starts `smoltui web` on a free
loopback port in a throwaway home, opens it in headless Chromium (Debian's ``chromium``), and reads
the screen out of the page's xterm.js terminal through the DevTools protocol until the chat screen
is there.

    .venv/bin/python benchmarks/web_check.py [--model scripted] [--timeout 60] [--screenshot FILE | --no-screenshot] [--serve]

Prints the time to the first drawn chat screen and the screen itself; exits 1 if it never appears.
The text is read from xterm.js's buffer, which is what its renderer paints: the page keeps its
terminal in a local variable, so the check finds it with ``Runtime.queryObjects``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp  # textual-serve's own web stack: its websocket client speaks to Chromium

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SCREEN_TEXT = """function() {
  const session = this.find(o => { try { return o && o.terminal && o.terminal.buffer && o.terminal.buffer.active; }
                                   catch (e) { return false; } });
  if (!session) return null;
  const buffer = session.terminal.buffer.active, lines = [];
  for (let i = 0; i < session.terminal.rows; i++) {
    const line = buffer.getLine(buffer.viewportY + i);
    lines.push(line ? line.translateToString(true) : "");
  }
  return lines.join("\\n");
}"""
"""Run on every object of the page: the textual-serve session is the one holding an xterm ``terminal``."""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cdp:
    """A minimal DevTools protocol client: one websocket, commands answered by id, one page session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())
        self.session: str | None = None

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            future = self.waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self.waiting.values():
            future.set_exception(ConnectionError("Chromium closed the DevTools connection"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        await self.ws.send_json(message)
        answer = await future
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error'].get('message')}")
        return answer["result"]


async def read_line(stream: asyncio.StreamReader, marker: str, what: str) -> str:
    """The first line of ``stream`` holding ``marker`` (what a process prints once it is ready)."""
    while line := (await stream.readline()).decode(errors="replace"):
        if marker in line:
            return line.strip()
    raise RuntimeError(f"{what} ended before it was ready")


@contextlib.asynccontextmanager
async def process(*argv: str, env: dict[str, str] | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)  # its group: `smoltui web` and the TUI of each tab
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                os.killpg(proc.pid, 9)
                await proc.wait()


async def check(model: str, timeout_s: float, expect: list[str], screenshot: Path | None, *,
                serve: bool = False) -> dict[str, Any]:
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no chromium on PATH (apt install chromium)")
    with tempfile.TemporaryDirectory(prefix="smoltui-web-") as scratch:
        home, profile, runtime = Path(scratch, "home"), Path(scratch, "chromium"), Path(scratch, "run")
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "SMOLTUI_HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
               "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        port = free_port()
        if serve:
            await _smoltui(env, "serve", "--detach", "--model", model)
        try:
            return await _open(chromium, env, model, port, profile, timeout_s, expect, screenshot)
        finally:
            if serve:
                await _smoltui(env, "serve", "stop")


async def _smoltui(env: dict[str, str], *argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "smoltui", *argv, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"smoltui {' '.join(argv)}: {err.decode(errors='replace').strip()}")


async def _open(chromium: str, env: dict[str, str], model: str, port: int, profile: Path, timeout_s: float,
                expect: list[str], screenshot: Path | None) -> dict[str, Any]:
    started = time.monotonic()
    async with process(sys.executable, "-m", "smoltui", "web", "--model", model, "--port", str(port),
                       env=env) as web:
        assert web.stderr is not None
        await asyncio.wait_for(read_line(web.stderr, "serving the TUI at", "smoltui web"), timeout_s)
        serving_s = time.monotonic() - started
        async with process(chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                           "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,800",
                           "--no-first-run", "--no-default-browser-check", "about:blank") as browser:
            assert browser.stderr is not None
            line = await asyncio.wait_for(read_line(browser.stderr, "DevTools listening on", "chromium"),
                                          timeout_s)
            async with aiohttp.ClientSession() as http, http.ws_connect(line.split()[-1], max_msg_size=0) as ws:
                cdp = Cdp(ws)
                target = await cdp.send("Target.createTarget", url="about:blank")
                attached = await cdp.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
                cdp.session = attached["sessionId"]
                opened = time.monotonic()
                await cdp.send("Page.navigate", url=f"http://127.0.0.1:{port}/")
                screen = await asyncio.wait_for(_screen_with(cdp, expect), timeout_s)
                drawn_s = time.monotonic() - opened
                if screenshot is not None:
                    shot = await cdp.send("Page.captureScreenshot", format="png")
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return {"serving_s": round(serving_s, 3), "first_chat_screen_s": round(drawn_s, 3), "screen": screen}


async def _screen_with(cdp: Cdp, expect: list[str]) -> str:
    """The terminal's text once every ``expect`` string is on it: asked again each time the page
    has had a frame to draw in (``requestAnimationFrame``), never after a fixed sleep."""
    while True:
        # asked again each time: the page that navigation replaces has its own Object.prototype
        prototype = (await cdp.send("Runtime.evaluate", expression="Object.prototype"))["result"]["objectId"]
        objects = (await cdp.send("Runtime.queryObjects", prototypeObjectId=prototype))["objects"]["objectId"]
        answer = await cdp.send("Runtime.callFunctionOn", objectId=objects, functionDeclaration=SCREEN_TEXT,
                                returnByValue=True)
        await cdp.send("Runtime.releaseObject", objectId=objects)
        text = answer["result"].get("value") or ""
        if text and all(word in text for word in expect):
            return text
        await cdp.send("Runtime.evaluate", expression="new Promise(r => requestAnimationFrame(() => r(1)))",
                       awaitPromise=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="scripted", help="the model the TUI opens (default: scripted)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each step")
    parser.add_argument("--expect", action="append", default=None,
                        help="text the chat screen must show (repeatable; default: the chat's first hint, "
                             "'Type a message', and with the scripted model its name in the status bar)")
    parser.add_argument("--serve", action="store_true",
                        help="start `smoltui serve --detach` for the home first, so the tab is its client")
    parser.add_argument("--screenshot", type=Path, default=REPO / "benchmarks" / "out" / "web_check.png")
    parser.add_argument("--no-screenshot", dest="screenshot", action="store_const", const=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    expect = args.expect or ["Type a message", *([args.model] if args.model == "scripted" else [])]
    try:
        result = asyncio.run(check(args.model, args.timeout, expect, args.screenshot, serve=args.serve))
    except (TimeoutError, RuntimeError, ConnectionError, OSError) as error:
        print(f"web_check: FAIL: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
        return 0
    print(result["screen"])
    print(f"\nsmoltui web answering after {result['serving_s']:.2f} s; chat screen drawn in Chromium "
          f"{result['first_chat_screen_s']:.2f} s after opening the page; screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
