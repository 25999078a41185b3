from pathlib import Path

import pytest

from smoltui.backends.gguf_file import TYPE_SIZES, read_gguf
from smoltui.errors import ModelError


def test_bundled_model_header(bundled_model: Path) -> None:
    info = read_gguf(bundled_model)
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.tensor_count > 100
    assert "<|im_start|>" in (info.chat_template or "")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found: .*nope.gguf"):
        read_gguf(tmp_path / "nope.gguf")


def test_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("these are not weights\n", encoding="utf-8")
    with pytest.raises(ModelError, match="is not a GGUF model file"):
        read_gguf(path)


def test_truncated_in_the_header_and_in_the_data(tmp_path: Path, bundled_model: Path) -> None:
    data = bundled_model.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="is truncated"):
            read_gguf(path)


def test_type_table_matches_ggml() -> None:
    gguf = pytest.importorskip("gguf")
    sizes = gguf.constants.GGML_QUANT_SIZES
    for type_id, size in TYPE_SIZES.items():
        assert tuple(sizes[gguf.GGMLQuantizationType(type_id)]) == size, type_id
