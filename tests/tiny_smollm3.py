"""A tiny random SmolLM3 model folder for the transformers backend tests (and the benchmark's smoke run).

The model has SmolLM3's architecture (NoPE layers included) at toy size; the tokenizer is byte-level
BPE without merges (every byte is one token, so any text re-tokenizes to the tokens it was generated
as) plus SmolLM3's special tokens; the chat template is SmolLM3's own when the shared reference files
are beside the project, ChatML otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<|endoftext|>",
]
SMOLLM3_TEMPLATE = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "smollm3" / "chat_template.jinja"
)


def build_tokenizer(extra_tokens: tuple[str, ...] = ()):  # noqa: ANN201 (transformers types are imported lazily)
    """``extra_tokens``: plain (not special) multi-byte tokens, as a real vocabulary's merges make."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    if extra_tokens:
        tokenizer.add_tokens(list(extra_tokens))
    return tokenizer


def build_model_folder(
    folder: Path, *, seed: int = 0, layers: int = 2, hidden: int = 64, extra_tokens: tuple[str, ...] = ()
) -> Path:
    """Write config, random weights, tokenizer and chat template to ``folder``; return it."""
    import torch
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(extra_tokens)
    if SMOLLM3_TEMPLATE.is_file():
        tokenizer.chat_template = SMOLLM3_TEMPLATE.read_text(encoding="utf-8")
    else:
        from smoltui.backends.chat_template import CHATML_TEMPLATE

        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = SmolLM3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        no_rope_layers=[1] * (layers - 1) + [0],
        eos_token_id=im_end,
        pad_token_id=im_end,
        bos_token_id=None,
        tie_word_embeddings=False,
        # Wide enough an init that greedy replies vary from token to token and from prompt to prompt.
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    SmolLM3ForCausalLM(config).save_pretrained(folder)
    return folder


@contextmanager
def gpu_like_static_cache() -> Iterator[None]:
    """Make a static cache on the CPU hold inference tensors, as it does on a GPU.

    A ``StaticLayer`` creates its position counter at construction and moves it to the keys' device
    in its lazy initialization, which runs in the first forward pass, inside ``torch.inference_mode()``.
    On a GPU that move makes a new tensor, an inference tensor, which can then only be changed in place
    inside inference mode; on the CPU ``.to("cpu")`` hands back the same, normal tensor, so a bug that
    changes it outside inference mode would pass on the CPU. This does what the move does on a GPU.
    """
    import torch
    from transformers.cache_utils import StaticLayer

    original = StaticLayer.lazy_initialization

    def lazy_initialization(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        original(self, *args, **kwargs)
        counter = getattr(self, "cumulative_length", None)
        if isinstance(counter, torch.Tensor) and torch.is_inference_mode_enabled():
            self.cumulative_length = counter.clone()  # what .to("cuda") makes in inference mode
            if not torch.compiler.is_compiling():
                torch._dynamo.mark_static_address(self.cumulative_length)

    StaticLayer.lazy_initialization = lazy_initialization
    try:
        yield
    finally:
        StaticLayer.lazy_initialization = original
