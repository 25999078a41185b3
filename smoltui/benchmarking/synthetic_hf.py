"""A random-weight transformers model folder with SmolLM3-3B's exact shape, for the transformers backend.

The numbers are SmolLM3-3B's ``config.json`` (36 layers, hidden 2048, 16 heads / 4 KV heads, FFN 11008,
vocab 128256, every 4th layer without RoPE, tied embeddings), the weights are seeded random normals saved
in bf16 (~6 GB for the 3B shape), and the tokenizer is the same one the synthetic GGUF gets: SmolLM2's
byte-level BPE padded to 128256 tokens with SmolLM3's special tokens at their real ids, and SmolLM3's
chat template. So both backends measure the same model on the same prompts.

Needs torch, transformers, tokenizers, gguf (to read the vocabulary) and the bundled model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smoltui.errors import ModelError

Say = Callable[[str], None]

# SmolLM3-3B's config.json: the numbers that shape the compute and the memory (random weights).
# Importing this costs nothing (no torch, no numpy): GPU scripts can share it.
SMOLLM3_3B: dict[str, Any] = {
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "max_position_embeddings": 65536,
    "rope_theta": 5_000_000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "no_rope_layer_interval": 4,
    # 1 = the layer uses RoPE; every 4th layer does not.
    "no_rope_layers": [0 if (i + 1) % 4 == 0 else 1 for i in range(36)],
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "bos_token_id": 128000,
    "eos_token_id": 128012,
    "pad_token_id": 128004,
    "initializer_range": 0.02,
}
# Same as the tiny GGUF: checks the pipeline in seconds.
TINY = {**SMOLLM3_3B, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "no_rope_layers": [1, 1, 1, 0]}


def config_for(numbers: dict[str, Any]) -> Any:
    from transformers import SmolLM3Config

    return SmolLM3Config(**numbers, use_cache=True)


def build_tokenizer() -> Any:
    """SmolLM2's BPE padded to SmolLM3's vocabulary (see :func:`synthetic_gguf.build_tokenizer`)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from smoltui.benchmarking import synthetic_gguf

    vocab_size = SMOLLM3_3B["vocab_size"]
    tokens, _types, merges = synthetic_gguf.build_tokenizer(vocab_size)
    core = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                merges=[tuple(m.split(" ", 1)) for m in merges]))
    # SmolLM2's pre-tokenizer: digits one by one, then GPT-2's byte-level split.
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    core.decoder = decoders.ByteLevel()
    added = [AddedToken(tokens[i], special=True, normalized=False)
             for i in range(synthetic_gguf.FIRST_ADDED, vocab_size)]
    core.add_special_tokens(added)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=tokens[SMOLLM3_3B["eos_token_id"]],
        pad_token=tokens[SMOLLM3_3B["pad_token_id"]],
    )
    tokenizer.chat_template = synthetic_gguf.chat_template()
    return tokenizer


def make_folder(out: Path, *, tiny: bool = False, seed: int = 0, say: Say = print) -> Path:
    """Write the model folder at ``out`` unless it is already complete; return it."""
    if (out / "config.json").is_file():
        return out
    try:
        import torch
        from transformers import SmolLM3ForCausalLM
    except ImportError as error:
        raise ModelError(f"building the synthetic model needs torch and transformers ({error}): "
                         "pip install 'smoltui[gpu]'") from None
    numbers = TINY if tiny else SMOLLM3_3B
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        say(f"building a random-weight SmolLM3-{'tiny' if tiny else '3B'} model in {out} (once)")
        tokenizer = build_tokenizer()
        tokenizer.save_pretrained(partial)
        torch.manual_seed(seed)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: half the memory of an fp32 model
        try:
            model = SmolLM3ForCausalLM(config_for(numbers))
        finally:
            torch.set_default_dtype(default)
        with torch.no_grad():
            # As in the synthetic GGUF: tokens a trained model never saw get small embeddings, so
            # decoding on random weights does not mostly pick padding tokens that print nothing.
            unused = [i for i, t in enumerate(tokenizer.convert_ids_to_tokens(range(numbers["vocab_size"])))
                      if t.startswith(("<|reserved_special_token_", "<|smollm2_unused_"))]
            model.get_input_embeddings().weight[unused] *= 0.1
        model.generation_config.eos_token_id = numbers["eos_token_id"]
        say(f"saving {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters (bf16)")
        model.save_pretrained(partial)
        del model
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out
