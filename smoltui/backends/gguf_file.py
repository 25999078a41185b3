"""Check a GGUF file before handing it to llama.cpp.

llama.cpp reports a bad file with a C-level log line and a bare ``ValueError``; reading the header
ourselves lets us say exactly what is wrong (not GGUF, truncated, unsupported version) and where.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from smoltui.errors import ModelError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGML type id -> (elements per block, bytes per block), as in ggml's type traits.
TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8),
    28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36),
    41: (128, 18),
}  # fmt: skip

# GGUF metadata value types -> struct format (strings and arrays are handled separately).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Metadata we keep; big arrays (the vocabulary) are skipped without being decoded.
_KEEP = ("general.", "tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id")


class _Truncated(Exception):
    pass


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    version: int
    tensor_count: int
    metadata: dict[str, object] = field(repr=False)
    file_size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name") or self.path.stem)

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None


class _Reader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise _Truncated
        return data

    def unpack(self, fmt: str) -> object:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = int(self.unpack("<Q"))  # type: ignore[arg-type]
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool) -> object:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind = int(self.unpack("<I"))  # type: ignore[arg-type]
            count = int(self.unpack("<Q"))  # type: ignore[arg-type]
            if item_kind in _SCALARS and not keep:
                self.read(struct.calcsize(_SCALARS[item_kind]) * count)
                return None
            items = [self.value(item_kind, keep) for _ in range(count)]
            return items if keep else None
        raise ValueError(f"unknown metadata value type {kind}")


def read_gguf(path: Path) -> GGUFInfo:
    """Parse the header of ``path``; raise :class:`ModelError` naming the problem and the file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a GGUF model file")
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            return _parse(path, handle, size)
    except _Truncated:
        raise ModelError(
            f"{path} is truncated ({size:,} bytes): the download or copy did not finish; fetch it again"
        ) from None
    except PermissionError:
        raise ModelError(f"cannot read {path}: permission denied") from None
    except (ValueError, UnicodeDecodeError, struct.error) as error:
        raise ModelError(f"{path} is not a valid GGUF file: {error}") from None


def _parse(path: Path, handle: BinaryIO, size: int) -> GGUFInfo:
    reader = _Reader(handle)
    magic = handle.read(4)
    if magic != MAGIC:
        hint = " (it looks like a safetensors/PyTorch checkpoint, not GGUF)" if magic[:1] in (b"{", b"P") else ""
        raise ModelError(f"{path} is not a GGUF model file{hint}")
    version = int(reader.unpack("<I"))  # type: ignore[arg-type]
    if version not in (2, 3):
        raise ModelError(f"{path} uses GGUF version {version}; smoltui reads versions 2 and 3")
    tensor_count = int(reader.unpack("<Q"))  # type: ignore[arg-type]
    kv_count = int(reader.unpack("<Q"))  # type: ignore[arg-type]
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = reader.string()
        kind = int(reader.unpack("<I"))  # type: ignore[arg-type]
        keep = key.startswith(_KEEP) or key.endswith(".context_length")
        value = reader.value(kind, keep)
        if keep:
            metadata[key] = value
    end = 0
    for _ in range(tensor_count):
        reader.string()
        n_dims = int(reader.unpack("<I"))  # type: ignore[arg-type]
        elements = 1
        for _ in range(n_dims):
            elements *= int(reader.unpack("<Q"))  # type: ignore[arg-type]
        ggml_type = int(reader.unpack("<I"))  # type: ignore[arg-type]
        offset = int(reader.unpack("<Q"))  # type: ignore[arg-type]
        block, block_bytes = TYPE_SIZES.get(ggml_type, (1, 0))
        end = max(end, offset + elements // block * block_bytes)
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))  # type: ignore[arg-type]
    data_start = -(-handle.tell() // alignment) * alignment
    if data_start + end > size:
        raise _Truncated
    return GGUFInfo(path=path, version=version, tensor_count=tensor_count, metadata=metadata, file_size=size)
