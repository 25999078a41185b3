"""Loading a model for the transformers backend: dtype, bitsandbytes quantization, device map, errors.

Everything here runs on the backend's worker thread; torch, transformers and bitsandbytes are
imported inside the functions so that importing smoltui never pays for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from smoltui.errors import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Quantization = Literal["none", "nf4", "int8"]


@dataclass(frozen=True)
class TransformersSettings:
    dtype: Dtype = "auto"
    """auto: bf16 on CUDA with bf16 support, else fp16 on CUDA, fp32 on CPU."""
    quantization: Quantization = "none"
    device_map: str | dict[str, Any] | None = "auto"
    max_memory: dict[str, str] | None = None
    """e.g. {"0": "20GiB", "cpu": "64GiB"}"""
    offload_folder: str | None = None
    compile: bool = False
    """Static cache + torch.compile fast path (the decode step is compiled once per backend)."""
    max_context: int = 8192


def import_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        raise ModelError(
            "the transformers backend needs torch and transformers: run `pip install 'smoltui[gpu]'` "
            "(or `pip install torch transformers accelerate` for CPU)"
        ) from None
    return torch


def resolve_dtype(setting: Dtype, *, cuda: bool) -> torch.dtype:
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_source(model: str) -> str:
    """The folder or hub id to load; a missing folder is a clear error, not a hub lookup."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"{model} is a file: the transformers backend loads a model folder (config.json, "
                "*.safetensors, tokenizer files); use the llama.cpp backend for a .gguf"
            )
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: it is not a transformers model folder")
        return str(path)
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith(".gguf"):
        raise ModelError(f"model folder not found: {path}")
    return model  # a hub id: from_pretrained resolves it (from the local cache when offline)


def quantization_config(settings: TransformersSettings, torch_dtype: torch.dtype) -> Any:
    """A BitsAndBytesConfig for nf4/int8, after checking what that needs; None without quantization."""
    if settings.quantization == "none":
        return None
    import torch

    what = "4-bit nf4" if settings.quantization == "nf4" else "8-bit int8"
    if not torch.cuda.is_available():
        raise ModelError(
            f"{what} quantization runs on CUDA GPUs only and none is available: "
            "set the transformers quantization to none (bf16/fp32) or use the llama.cpp backend"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(
            f"{what} quantization needs bitsandbytes: run `pip install bitsandbytes` "
            "(or set the transformers quantization to none)"
        ) from None
    from transformers import BitsAndBytesConfig

    if settings.quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch_dtype,
            bnb_4bit_use_double_quant=True,
        )
    # CPU offload of the layers that do not fit only works for int8 when asked for.
    offload = settings.max_memory is not None and "cpu" in settings.max_memory
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=offload)


def load_kwargs(settings: TransformersSettings) -> dict[str, Any]:
    """The from_pretrained arguments for device placement, dtype and quantization."""
    import torch

    cuda = torch.cuda.is_available()
    dtype = resolve_dtype(settings.dtype, cuda=cuda)
    kwargs: dict[str, Any] = {"dtype": dtype}
    quant = quantization_config(settings, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    device_map = settings.device_map
    if device_map == "auto" and not cuda and quant is None:
        device_map = None  # plain CPU load: no accelerate hooks, nothing to dispatch
    if device_map is not None:
        kwargs["device_map"] = device_map
        if settings.max_memory:
            kwargs["max_memory"] = {_device_key(k): v for k, v in settings.max_memory.items()}
        if settings.offload_folder:
            Path(settings.offload_folder).expanduser().mkdir(parents=True, exist_ok=True)
            kwargs["offload_folder"] = str(Path(settings.offload_folder).expanduser())
    return kwargs


def _device_key(key: str | int) -> str | int:
    """max_memory keys: GPU indices as ints ("0" in TOML), "cpu"/"disk"/"mps" as they are."""
    return int(key) if isinstance(key, str) and key.isdigit() else key


def load_model(source: str, settings: TransformersSettings) -> tuple[Any, Any]:
    """The model (eval mode) and its tokenizer; every failure becomes a ModelError a user can act on."""
    torch = import_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = load_kwargs(settings)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelError(f"could not load the tokenizer of {source}: {_first_line(error)}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise ModelError(out_of_memory_message(settings, "loading the model")) from None
    except ImportError as error:  # e.g. accelerate missing for device_map
        raise ModelError(f"loading {source} needs a package that is missing: {_first_line(error)}") from None
    except (OSError, ValueError, RuntimeError) as error:
        text = _first_line(error)
        if "out of memory" in text.lower():
            raise ModelError(out_of_memory_message(settings, "loading the model")) from None
        raise ModelError(f"transformers could not load {source}: {text}") from None
    model.eval()
    return model, tokenizer


def out_of_memory_message(settings: TransformersSettings, doing: str) -> str:
    hints = []
    if settings.quantization == "none":
        hints.append('quantization = "nf4" (or "int8")')
    if settings.max_memory is None:
        hints.append('max_memory with a "cpu" share (layers that do not fit move to RAM)')
    if settings.compile or settings.max_context > 4096:
        hints.append(f"a smaller max_context (now {settings.max_context})")
    advice = "; ".join(hints) if hints else "a smaller model, or the llama.cpp backend"
    return f"out of GPU memory while {doing}: set {advice} in the transformers settings"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
