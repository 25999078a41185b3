"""Settings: a TOML file in the user config dir, environment overrides, CLI flags win.

Example ``config.toml``::

    [model]
    default = "~/models/SmolLM3-Q4_K_M.gguf"
    n_ctx = 8192

    [chat]
    think = false
    system_prompt = "You are terse."

    [ui]
    theme = "smol-dusk"

    [keymap]
    "chat.think" = "ctrl+k"

    [approval]
    defaults = { write = "ask", execute = "ask", network = "deny" }
    tools = { read_file = "auto", python = "ask" }

    [[mcp.servers]]
    name = "git"
    command = "uvx"
    args = ["mcp-server-git"]
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smoltui.errors import ConfigError
from smoltui.tools.calls import Policy
from smoltui.tools.mcp_client import MCPServerConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


BackendName = Literal["llama_cpp", "transformers", "openai"]


class ModelConfig(_Section):
    backend: BackendName = Field("llama_cpp", description="runtime: llama_cpp (GGUF, CPU), transformers, openai")
    default: str | None = Field(None, description="model path or name used when --model is not given")
    n_ctx: int = Field(4096, ge=256, le=1 << 20, description="context size in tokens")
    threads: int | None = Field(None, ge=1, le=512, description="CPU threads; default: physical cores")
    n_batch: int = Field(512, ge=8, le=8192)
    search_paths: list[str] = Field(default_factory=list, description="folders scanned for .gguf files")
    prompt_cache: bool = Field(True, description="keep prefilled system prompts on disk")
    keep_conversations_mb: int = Field(
        1024, ge=0, le=1 << 20,
        description="RAM for the KV caches of chats the model is not serving now, so switching back "
        "does not prefill them again; also the disk budget for the newest few, written beside the "
        "prompt cache at exit (llama.cpp; 0: off)",
    )


class TransformersConfig(_Section):
    """``[transformers]``: mirrors ``smoltui.backends.transformers_backend.TransformersSettings``."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    quantization: Literal["none", "nf4", "int8"] = "none"
    device_map: str | dict[str, Any] | None = "auto"
    max_memory: dict[str, str] | None = Field(None, description='per device, e.g. {0 = "20GiB", cpu = "48GiB"}')
    offload_folder: str | None = None
    compile: bool = Field(False, description="static cache + torch.compile (slow first reply, fast after)")
    max_context: int = Field(8192, ge=256, le=1 << 20)


class OpenAIConfig(_Section):
    """``[openai]``: an OpenAI-compatible server (llama-server, vLLM, Ollama, ...)."""

    base_url: str = Field("http://127.0.0.1:8080", description="the server; /v1 is added when missing")
    api_key: str | None = Field(None, description="or set SMOLTUI_OPENAI_API_KEY / OPENAI_API_KEY")
    model: str | None = Field(None, description="the server's model id (default: the first it lists)")
    context_size: int = Field(8192, ge=256, le=1 << 22)
    timeout: float = Field(120.0, gt=0, description="seconds to connect and between streamed chunks")
    think_flag: bool = Field(True, description="add SmolLM3's /think or /no_think to the system prompt")


class ChatConfig(_Section):
    think: bool = False
    system_prompt: str = ""
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.6, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    repeat_penalty: float = Field(1.0, ge=0.0)
    seed: int | None = None


class UIConfig(_Section):
    theme: str = "smol-dusk"


class ToolsConfig(_Section):
    workspace: str | None = Field(None, description="folder the file/code tools may touch (default: cwd)")
    web_allow: list[str] = Field(default_factory=list, description="hosts web_fetch may reach (empty: all)")
    web_deny: list[str] = Field(default_factory=list, description="hosts web_fetch must not reach")
    web_allow_networks: list[str] = Field(
        default_factory=list,
        description="networks web_fetch may reach although loopback, private or link-local (127.0.0.0/8, ::1)")
    web_allow_private_hosts: list[str] = Field(
        default_factory=list,
        description="hosts web_fetch may reach although they resolve to loopback, private or link-local addresses")

    def model_post_init(self, context: Any, /) -> None:
        import ipaddress

        for value in self.web_allow_networks:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as error:
                raise ConfigError(f"[tools] web_allow_networks: {error} (write networks like 127.0.0.0/8 "
                                  "or addresses like ::1)") from None


class MCPConfig(_Section):
    servers: list[MCPServerConfig] = Field(default_factory=list)


class WorkflowsConfig(_Section):
    paths: list[str] = Field(default_factory=list, description="more folders of workflow files for the TUI")
    approval_timeout_s: float | None = Field(
        None, gt=0, description="deny a tool call nobody answered after this many seconds (default: wait)")


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    transformers: TransformersConfig = Field(default_factory=TransformersConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    mcp: MCPConfig = Field(default_factory=MCPConfig)
    workflows: WorkflowsConfig = Field(default_factory=WorkflowsConfig)
    approval: Policy = Field(default_factory=Policy, description="auto/ask/deny per risk and per tool")
    keymap: dict[str, str] = Field(default_factory=dict, description="binding id -> keys")


ENV_OVERRIDES = {
    "SMOLTUI_MODEL": ("model", "default"),
    "SMOLTUI_BACKEND": ("model", "backend"),
    "SMOLTUI_THREADS": ("model", "threads"),
    "SMOLTUI_N_CTX": ("model", "n_ctx"),
    "SMOLTUI_THEME": ("ui", "theme"),
}


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    """Read ``path`` (missing is fine: defaults), apply env overrides, validate."""
    environ = os.environ if environ is None else environ
    data: dict = {}
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: TOML error: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file: {error}") from None
    for variable, (section, key) in ENV_OVERRIDES.items():
        if environ.get(variable):
            data.setdefault(section, {})[key] = environ[variable]
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise ConfigError(f"{path}: {where}: {first['msg']}{more}") from None


def physical_cores() -> int:
    """Physical core count: llama.cpp decodes fastest with one thread per core, not per SMT sibling."""
    cores: set[tuple[str, str]] = set()
    try:
        physical = core = ""
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key and core:
                    cores.add((physical, core))
                    physical = core = ""
        if core:
            cores.add((physical, core))
    except OSError:
        pass
    if cores:
        return len(cores)
    return max(1, (os.cpu_count() or 2) // 2)
