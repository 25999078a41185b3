"""Choosing the runtime: ``--backend`` or ``[model] backend``, the settings each one gets, the messages.

No torch model is loaded here: the transformers backend is only built, never loaded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from smoltui.backends.models import ModelRef
from smoltui.cli.parser import build_parser
from smoltui.config import Config, TransformersConfig, load_config
from smoltui.core import build_backend, resolve_and_build
from smoltui.errors import ConfigError, ModelError
from smoltui.paths import Paths
from tests.test_cli import assert_one_line_error, run


def config_with(backend: str, **sections: dict) -> Config:
    return Config.model_validate({"model": {"backend": backend}, **sections})


@pytest.mark.parametrize(
    "command", [[], ["tui"], ["chat"], ["bench"], ["run", "wf.yaml"], ["models", "list"]]
)
def test_backend_flag_on_the_commands_that_take_a_model(command: list[str]) -> None:
    args = build_parser().parse_args([*command, "--backend", "openai"])
    assert args.backend == "openai"
    args = build_parser().parse_args(["--backend", "transformers", *command])
    assert args.backend == "transformers"


def test_an_unknown_backend_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["chat", "--backend", "onnx"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


def test_config_sections_and_env(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[model]\nbackend = "openai"\n'
        '[openai]\nbase_url = "http://gpu-box:8000/v1"\nmodel = "HuggingFaceTB/SmolLM3-3B"\ncontext_size = 32768\n'
        '[transformers]\nquantization = "nf4"\nmax_memory = { 0 = "20GiB", cpu = "48GiB" }\n',
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    assert config.model.backend == "openai"
    assert (config.openai.base_url, config.openai.context_size) == ("http://gpu-box:8000/v1", 32768)
    assert config.transformers.quantization == "nf4"
    assert config.transformers.max_memory == {"0": "20GiB", "cpu": "48GiB"}
    assert (
        load_config(tmp_path / "absent.toml", environ={"SMOLTUI_BACKEND": "transformers"}).model.backend
        == "transformers"
    )
    path.write_text('[model]\nbackend = "onnx"\n', encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"model\.backend: Input should be 'llama_cpp', 'transformers' or 'openai'"
    ):
        load_config(path, environ={})


def test_openai_backend_gets_url_key_model_and_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMOLTUI_OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    paths = Paths.resolve(tmp_path)
    config = config_with(
        "openai",
        openai={"base_url": "http://127.0.0.1:9/", "model": "smollm3", "context_size": 16384, "timeout": 5},
    )
    ref, backend = resolve_and_build(config, paths, None)
    assert backend.name == "openai" and ref.name == "smollm3"
    s = backend.settings
    assert (s.base_url, s.api_key, s.model, s.context_size, s.timeout_s) == (
        "http://127.0.0.1:9/",
        "sk-env",
        "smollm3",
        16384,
        5,
    )
    assert backend.root == "http://127.0.0.1:9/v1" and backend.context_size == 16384
    # --model names the server's model; SMOLTUI_OPENAI_API_KEY beats OPENAI_API_KEY; the config beats both.
    monkeypatch.setenv("SMOLTUI_OPENAI_API_KEY", "sk-smoltui")
    ref, backend = resolve_and_build(config, paths, "qwen3")
    assert (ref.name, backend.settings.model, backend.settings.api_key) == ("qwen3", "qwen3", "sk-smoltui")
    config.openai.api_key = "sk-config"
    config.openai.model = None
    ref, backend = resolve_and_build(config, paths, None)
    assert (
        backend.settings.api_key == "sk-config" and backend.settings.model == ""
    )  # the server's first model


def test_scripted_stays_scripted_whatever_the_backend(tmp_path: Path) -> None:
    for name in ("openai", "transformers", "llama_cpp"):
        _, backend = resolve_and_build(config_with(name), Paths.resolve(tmp_path), "scripted")
        assert backend.name == "scripted"


def test_transformers_settings_mirror_the_config(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from smoltui.backends.transformers_backend import TransformersBackend, TransformersSettings

    assert set(TransformersConfig.model_fields) == {f.name for f in fields(TransformersSettings)}
    folder = tmp_path / "SmolLM3-3B"
    folder.mkdir()
    config = config_with(
        "transformers",
        transformers={"dtype": "bfloat16", "quantization": "int8", "device_map": {"": 0}, "compile": True},
    )
    ref, backend = resolve_and_build(config, Paths.resolve(tmp_path), str(folder))
    assert isinstance(backend, TransformersBackend)
    assert ref == ModelRef(str(folder), "path", folder) and backend.model_name == "SmolLM3-3B"
    assert backend.settings == TransformersSettings(
        dtype="bfloat16", quantization="int8", device_map={"": 0}, compile=True
    )
    ref, _ = resolve_and_build(config, Paths.resolve(tmp_path), "HuggingFaceTB/SmolLM3-3B")
    assert ref == ModelRef("HuggingFaceTB/SmolLM3-3B", "hf-cache", None)


def test_transformers_without_torch_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    ref = ModelRef("m", "hf-cache", None)
    with pytest.raises(ModelError, match=r"needs torch: run `pip install 'smoltui\[gpu\]'`") as error:
        build_backend(ref, config_with("transformers"), Paths.resolve(tmp_path))
    assert error.value.exit_code == 4


def test_transformers_needs_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="the transformers backend needs a model"):
        resolve_and_build(config_with("transformers"), Paths.resolve(tmp_path), None)


def test_llama_cpp_stays_the_default(tmp_path: Path, bundled_model: Path) -> None:
    ref, backend = resolve_and_build(Config(), Paths.resolve(tmp_path), None)
    assert backend.name == "llama.cpp" and ref.path == bundled_model


# -- the CLI against a server ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._json(200, {"object": "list", "data": [{"id": "smollm3"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"body": body, "authorization": self.headers.get("Authorization")})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for piece in ("Bonjour", " from", " the server."):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        usage = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def openai_server() -> Iterator[str]:
    _Handler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_chat_with_backend_openai_streams_from_the_server(
    cli_env: dict[str, str], home: Path, openai_server: str
) -> None:
    (home / "config.toml").write_text(f'[openai]\nbase_url = "{openai_server}"\n', encoding="utf-8")
    cli_env["SMOLTUI_OPENAI_API_KEY"] = "sk-cli"
    result = run(cli_env, "chat", "--backend", "openai", "--prompt", "Hi", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["reply"] == "Bonjour from the server."
    assert payload["backend"] == "openai" and payload["model"] == "(server default)"
    assert (payload["stats"]["prompt_tokens"], payload["stats"]["completion_tokens"]) == (12, 3)
    (request,) = _Handler.seen
    assert request["authorization"] == "Bearer sk-cli" and request["body"]["model"] == "smollm3"
    assert request["body"]["messages"][-1] == {"role": "user", "content": "Hi"}


def test_an_unreachable_server_is_one_line_and_exit_7(cli_env: dict[str, str]) -> None:
    cli_env["SMOLTUI_BACKEND"] = "openai"
    (Path(cli_env["SMOLTUI_HOME"]) / "config.toml").write_text(
        '[openai]\nbase_url = "http://127.0.0.1:9"\n', encoding="utf-8"
    )
    result = run(cli_env, "bench", "--runs", "1")
    assert_one_line_error(result, 7, "the server at http://127.0.0.1:9/v1 is unreachable")
    # The chat command keeps the kind of failure too.
    result = run(cli_env, "chat", "--prompt", "Hi")
    assert_one_line_error(result, 7, "the server at http://127.0.0.1:9/v1 is unreachable")


def test_transformers_on_a_gguf_is_a_clear_error(cli_env: dict[str, str], bundled_model: Path) -> None:
    pytest.importorskip("transformers")
    result = run(
        cli_env, "chat", "--backend", "transformers", "--model", str(bundled_model), "--prompt", "Hi"
    )
    assert_one_line_error(result, 4, "is a file: the transformers backend loads a model folder")


def test_bench_measures_a_server(cli_env: dict[str, str], home: Path, openai_server: str) -> None:
    (home / "config.toml").write_text(
        f'[model]\nbackend = "openai"\n[openai]\nbase_url = "{openai_server}"\n', encoding="utf-8"
    )
    result = run(cli_env, "bench", "--json", "--prompt-tokens", "64", "--new-tokens", "3", "--runs", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["backend"], report["model"]) == ("openai", "smollm3")
    # The server's usage record, not a count of chunks.
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in report["runs"]] == [(12, 3), (12, 3)]
    # A warm-up and two runs, each with max_tokens and a prompt of about 64 estimated tokens.
    assert len(_Handler.seen) == 3 and _Handler.seen[-1]["body"]["max_tokens"] == 3
