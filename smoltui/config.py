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
import string
import tomllib
import unicodedata
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from smoltui.errors import ConfigError
from smoltui.safe_text import printable
from smoltui.tools.calls import Policy
from smoltui.tools.mcp_client import MCPServerConfig

MAX_CONFIG_BYTES = 1 << 20
"""A config file larger than this is refused before it is parsed."""


class _Section(BaseModel):
    """A ``[section]`` of the file. A value set in code later (``config.model.n_ctx = args.n_ctx``)
    is checked as the file's is: out of range, it is a :class:`ConfigError`, not a crash later on."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    section: ClassVar[str] = ""

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            where = f"{self.section}.{name}" if self.section else name
            raise ConfigError(f"{where} = {value!r}: {_first_problem(error)}") from None


def _first_problem(error: ValidationError) -> str:
    message = str(error.errors()[0]["msg"]).removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return message + more


# --- keys ---------------------------------------------------------------------------------------

MODIFIERS = ("alt", "ctrl", "hyper", "meta", "shift", "super")
"""Key modifiers, in the order Textual writes them in a key event (``alt+ctrl+x``)."""


def _character_key(char: str) -> str:
    """Textual's name for the key that types ``char`` (``/`` is ``slash``; a letter is itself)."""
    if char.isalnum():
        return char
    try:
        name = unicodedata.name(char).lower().replace("-", "_").replace(" ", "_")
    except ValueError:
        return char
    return {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at", "hyphen_minus": "minus",
            "plus_sign": "plus", "low_line": "underscore"}.get(name, name)


# The names Textual gives keys (textual.keys.Keys and the kitty protocol's functional keys), without
# importing Textual; tests/test_bounded_config.py checks this table against Textual's own.
KEY_NAMES: frozenset[str] = frozenset({
    "escape", "enter", "return", "newline", "tab", "space", "backspace", "delete", "insert",
    "home", "end", "pageup", "pagedown", "up", "down", "left", "right",
    *(f"f{n}" for n in range(1, 36)),
    "caps_lock", "scroll_lock", "num_lock", "print_screen", "pause", "menu",
    "kp_begin", "add", "subtract", "multiply", "divide", "decimal", "separator", "equal",
    "media_play", "media_pause", "media_play_pause", "media_reverse", "media_stop", "media_fast_forward",
    "media_rewind", "media_track_next", "media_track_previous", "media_record",
    "lower_volume", "raise_volume", "mute_volume", "iso_level3_shift", "iso_level5_shift",
    *(f"{side}_{key}" for side in ("left", "right") for key in ("shift", "control", "alt", "super", "hyper", "meta")),
    *(_character_key(char) for char in string.punctuation),
    "ctrl-at", "circumflex_accent", "right_square_bracket",
})  # fmt: skip

# Keys that are one key to the terminal: a binding on either fires for both.
_SAME_KEY = {"ctrl+i": "tab", "ctrl+m": "enter", "ctrl+left_square_bracket": "escape", "newline": "ctrl+j",
             "ctrl+space": "ctrl+at"}


def normalize_key(key: str) -> str:
    """One key in Textual's spelling: modifiers lower case and in Textual's order, a typed character by
    its name (``ctrl+/`` → ``ctrl+slash``). Raises ValueError naming what is wrong."""
    shown = key
    key = key.strip()
    if not key:
        raise ValueError("an empty key")
    if key == "+" or key.endswith("++"):
        parts, name = key[:-2].split("+") if len(key) > 1 else [], "+"
    else:
        *parts, name = key.split("+")
    modifiers = [part.lower() for part in parts]
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            raise ValueError(f"`{modifier}` in {shown!r} is not a modifier ({', '.join(MODIFIERS)})")
    if len(set(modifiers)) < len(modifiers):
        raise ValueError(f"{shown!r} names a modifier twice")
    if not name:
        raise ValueError(f"{shown!r} has no key after its modifiers")
    if len(name) == 1:
        if not name.isprintable() or name.isspace():
            raise ValueError(f"{shown!r}: write a space as `space` and a control character by its key")
        name = _character_key(name)
    elif name.lower() in KEY_NAMES:
        name = name.lower()
    else:
        raise ValueError(f"unknown key `{name}` in {shown!r} (a character, or a name such as escape, enter, "
                         "tab, space, up, pageup, f1...f24, slash)")
    return "+".join([*sorted(modifiers), name])


def normalize_keys(keys: str) -> str:
    """A ``[keymap]`` value: one or more keys separated by commas, each as :func:`normalize_key`."""
    if not keys.strip():
        raise ValueError("no key given")
    return ",".join(normalize_key(key) for key in keys.split(","))


KeyList = Annotated[str, AfterValidator(normalize_keys)]


@dataclass(frozen=True, order=True)
class KeyClash:
    """Two or more bindings on one key in one context: only one of them can work."""

    context: str
    key: str
    ids: tuple[str, ...]

    def __str__(self) -> str:
        return printable(f"[keymap] puts {', '.join(self.ids)} on the same key ({self.key}) in {self.context}; "
                         "only one of them works")


def key_clashes(
    keymap: Mapping[str, str],
    bindings: Mapping[str, tuple[str, str]],
    *,
    everywhere: Collection[str] = (),
) -> list[KeyClash]:
    """Bindings that end up on the same key in the same context, once ``keymap`` is applied.

    ``bindings`` maps each binding id to ``(context, default keys)``: the context is where the binding
    is active (a screen or widget name), the keys as in ``Binding(...)``. A binding in one of the
    ``everywhere`` contexts (the app's own, say) is active in every context. Keys are compared as
    the terminal sends them (``ctrl+i`` is ``tab``). Sorted by context, then key.
    """
    on_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    contexts = {context for context, _ in bindings.values()}
    for binding_id, (context, default) in bindings.items():
        for key in _keys_of(keymap.get(binding_id, default)):
            for where in (contexts if context in everywhere else (context,)):
                on_key[where, key].add(binding_id)
    return sorted(KeyClash(context, key, tuple(sorted(ids)))
                  for (context, key), ids in on_key.items() if len(ids) > 1)


def _keys_of(keys: str) -> list[str]:
    found = []
    for key in keys.split(","):
        try:
            key = normalize_key(key)
        except ValueError:
            key = key.strip()
        found.append(_SAME_KEY.get(key, key))
    return found


# --- sections -----------------------------------------------------------------------------------

BackendName = Literal["llama_cpp", "transformers", "openai"]


class ModelConfig(_Section):
    section: ClassVar[str] = "model"
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
    section: ClassVar[str] = "transformers"


    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    quantization: Literal["none", "nf4", "int8"] = "none"
    device_map: str | dict[str, Any] | None = "auto"
    max_memory: dict[str, str] | None = Field(None, description='per device, e.g. {0 = "20GiB", cpu = "48GiB"}')
    offload_folder: str | None = None
    compile: bool = Field(False, description="static cache + torch.compile (slow first reply, fast after)")
    max_context: int = Field(8192, ge=256, le=1 << 20)


class OpenAIConfig(_Section):
    """``[openai]``: an OpenAI-compatible server (llama-server, vLLM, Ollama, ...)."""
    section: ClassVar[str] = "openai"


    base_url: str = Field("http://127.0.0.1:8080", description="the server; /v1 is added when missing")
    api_key: str | None = Field(None, description="or set SMOLTUI_OPENAI_API_KEY / OPENAI_API_KEY")
    model: str | None = Field(None, description="the server's model id (default: the first it lists)")
    context_size: int = Field(8192, ge=256, le=1 << 22)
    timeout: float = Field(120.0, ge=1, le=86_400, description="seconds to connect and between streamed chunks")
    think_flag: bool = Field(True, description="add SmolLM3's /think or /no_think to the system prompt")


class ChatConfig(_Section):
    section: ClassVar[str] = "chat"
    think: bool = False
    system_prompt: str = ""
    max_tokens: int = Field(1024, ge=1, le=1 << 20)
    temperature: float = Field(0.6, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0, le=1 << 20)
    repeat_penalty: float = Field(1.0, gt=0.0, le=10.0, description="1.0: off; llama.cpp divides logits by it")
    seed: int | None = Field(None, ge=0, le=(1 << 32) - 1, description="llama.cpp takes a 32-bit seed")


class UIConfig(_Section):
    section: ClassVar[str] = "ui"
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
    section: ClassVar[str] = "mcp"
    servers: list[MCPServerConfig] = Field(default_factory=list)


class WorkflowsConfig(_Section):
    section: ClassVar[str] = "workflows"
    paths: list[str] = Field(default_factory=list, description="more folders of workflow files for the TUI")
    approval_timeout_s: float | None = Field(
        None, ge=1, description="deny a tool call nobody answered after this many seconds (default: wait)")


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
    keymap: dict[str, KeyList] = Field(
        default_factory=dict, description='binding id -> keys, e.g. "ctrl+k" or "f2,ctrl+shift+up"')


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
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: the config file is larger than {MAX_CONFIG_BYTES >> 20} MiB")
        data = tomllib.loads(raw.decode("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        pass
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: TOML error: {error}") from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise ConfigError(f"{path}: TOML error: arrays or tables nested too deeply") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file: {error}") from None
    for variable, (section, key) in ENV_OVERRIDES.items():
        if environ.get(variable):
            data.setdefault(section, {})[key] = environ[variable]
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        where = ".".join(str(part) for part in error.errors()[0]["loc"])
        raise ConfigError(f"{path}: {where}: {_first_problem(error)}") from None


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
