"""Token-level constraints for the transformers backend: a logits mask from llguidance.

The llama.cpp backend holds a tool call to its schema with a GBNF grammar; here the same job is done
per decode step, outside the model's forward pass: llguidance's matcher says which tokens may come
next, those bits become a boolean mask on the logits' device, every other logit is set to ``-inf``,
and the sampler picks from what is left. The sampled token is then fed back to the matcher.

* :class:`ConstraintFactory` wraps one tokenizer (converting its vocabulary for llguidance takes up
  to a second for 128k tokens, so it is done once, on first use) and compiles grammars, cached per
  schema; each :meth:`ConstraintFactory.tool_call` (or :meth:`ConstraintFactory.json_schema`, for a
  whole reply held to ``GenerationParams.json_schema``) hands out a fresh :class:`TokenConstraint`.
* The grammar of a call is ``"\\n"?`` then one JSON object matching
  :func:`~smoltui.backends.tool_calls.call_schema`, written the way SmolLM3's template writes calls
  (``{"name": "x", "arguments": {"k": 1}}``: ``", "`` and ``": "``, no other whitespace), so a
  constrained call looks exactly like one the model was trained on.
* When llguidance is not installed, :meth:`ConstraintFactory.available` is False (with one warning
  logged) and callers decode unconstrained: constraints make calls reliable, never a requirement.

Only the tokenizer, torch and llguidance are touched; imports are lazy (llguidance and torch load on
the worker thread that first needs them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from smoltui.backends.tool_calls import call_schema

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# SmolLM3's template writes calls with json.dumps' default separators and no other whitespace.
# Lenient: a keyword llguidance does not implement (a string "format" it lacks, say) is left out of the
# grammar rather than failing it, so the call's structure is still held.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


def llguidance_version() -> str | None:
    """The installed llguidance version, None when it is missing."""
    try:
        import llguidance
    except ImportError:
        return None
    return str(getattr(llguidance, "__version__", "?"))


def tool_call_grammar(tools: Sequence[Mapping[str, Any]]) -> str:
    """The Lark grammar (llguidance's dialect) of what follows ``<tool_call>``: an optional newline, one call."""
    schema = dict(call_schema([_with_refs_inlined(tool) for tool in tools]))
    schema["x-guidance"] = dict(JSON_STYLE)
    return "start: /\\n?/ call\ncall: %json " + json.dumps(schema, ensure_ascii=False)


def json_schema_grammar(schema: Mapping[str, Any]) -> str:
    """The Lark grammar of a whole reply that is one JSON value matching ``schema``.

    Local ``$ref``s are inlined as in tool parameters, and keywords llguidance does not implement are
    left out (``lenient``), so the structure is still held. Written compactly (``", "``, ``": "``).
    """
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    inlined = dict(_inline(schema, defs, 0))
    inlined["x-guidance"] = dict(JSON_STYLE)
    return "start: %json " + json.dumps(inlined, ensure_ascii=False)


def _with_refs_inlined(tool: Mapping[str, Any]) -> dict[str, Any]:
    """``tool`` with the local ``$ref``s of its parameters inlined.

    Nested inside the call's schema, a parameter schema's ``#/$defs/...`` would point at the call's
    root, where there are no ``$defs`` (pydantic-made schemas use them for nested models).
    """
    function = dict(tool.get("function", tool))
    parameters = function.get("parameters")
    if not isinstance(parameters, Mapping):
        return dict(tool)
    defs = {**(parameters.get("definitions") or {}), **(parameters.get("$defs") or {})}
    function["parameters"] = _inline(parameters, defs, 0)
    return {**tool, "function": function} if "function" in tool else function


def _inline(schema: Any, defs: Mapping[str, Any], depth: int) -> Any:
    if isinstance(schema, list):
        return [_inline(item, defs, depth) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(("#/$defs/", "#/definitions/")):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if target is None or depth >= 8:  # unknown, or a recursive model: any value there
            return {k: v for k, v in schema.items() if k != "$ref"}
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _inline({**target, **rest}, defs, depth + 1)
    return {k: _inline(v, defs, depth) for k, v in schema.items() if k not in ("$defs", "definitions")}


class TokenConstraint:
    """One constrained stretch of decoding: mask the logits, sample, :meth:`advance` with the token."""

    def __init__(self, matcher: Any, words: int) -> None:
        self._matcher = matcher
        self._words = words
        self._bitmask: Any = None
        self._shifts: Any = None

    @property
    def accepting(self) -> bool:
        """The text so far is complete (the end-of-sequence token is allowed now)."""
        return bool(self._matcher.is_accepting())

    @property
    def stopped(self) -> bool:
        """Nothing but the end-of-sequence token may follow."""
        return bool(self._matcher.is_stopped())

    @property
    def error(self) -> str | None:
        return str(self._matcher.get_error()) if self._matcher.is_error() else None

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (one row) with every token the grammar forbids next at ``-inf`` (a new tensor).

        Out of place: the logits of a forward pass are inference tensors, and a compiled or captured
        step's output buffer is reused by the next step.
        """
        import torch

        if self._bitmask is None:
            self._bitmask = torch.empty(self._words, dtype=torch.int32)
            self._shifts = torch.arange(32, dtype=torch.int32, device=logits.device)
        self._matcher.unsafe_compute_mask_ptr(self._bitmask.data_ptr(), self._words * 4)
        words = self._bitmask.to(logits.device)  # (a copy on a GPU: the buffer is refilled next step)
        allowed = ((words.unsqueeze(-1) >> self._shifts) & 1).bool().reshape(-1)
        vocab = logits.shape[-1]
        if allowed.numel() >= vocab:
            allowed = allowed[:vocab]
        else:  # logits wider than the tokenizer's vocabulary (padded embeddings): the padding is never allowed
            allowed = torch.cat([allowed, allowed.new_zeros(vocab - allowed.numel())])
        return logits.masked_fill(~allowed, float("-inf"))

    def advance(self, token: int) -> bool:
        """Feed the sampled token; False when the matcher refused it (it is then in an error state)."""
        return bool(self._matcher.consume_token(token))


class ConstraintFactory:
    """Grammars for one tokenizer; ``available`` is False when llguidance is missing or cannot load it."""

    def __init__(self, tokenizer: Any, *, vocab_size: int, eos_ids: Iterable[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos_ids = sorted(set(eos_ids))
        self._ll_tokenizer: Any = None
        self._failed = False
        self._matchers: dict[str, Any] = {}

    @property
    def available(self) -> bool:
        return self._load() is not None

    def _load(self) -> Any:
        if self._ll_tokenizer is not None or self._failed:
            return self._ll_tokenizer
        try:
            import llguidance.hf
        except ImportError:
            self._failed = True
            log.warning(
                "llguidance is not installed: tool calls and JSON replies are not held to their schemas "
                "(pip install 'smoltui[transformers]' or pip install llguidance)"
            )
            return None
        try:
            self._ll_tokenizer = llguidance.hf.from_tokenizer(
                self._tokenizer,
                n_vocab=self._vocab_size,
                eos_token=self._eos_ids or None,
            )
        except Exception as error:  # a slow tokenizer, an odd vocabulary: decode unconstrained
            self._failed = True
            log.warning(
                "llguidance cannot use this tokenizer (%s): tool calls and JSON replies are not constrained", error
            )
        return self._ll_tokenizer

    def tool_call(self, tools: Sequence[Mapping[str, Any]]) -> TokenConstraint | None:
        """A fresh constraint for the text after ``<tool_call>``; None when constraints are unavailable."""
        return self._constraint(tool_call_grammar(tools), "tool calls to these schemas")

    def json_schema(self, schema: Mapping[str, Any]) -> TokenConstraint | None:
        """A fresh constraint for a whole reply that is JSON matching ``schema``; None when unavailable."""
        return self._constraint(json_schema_grammar(schema), "the reply to this JSON schema")

    def _constraint(self, grammar: str, what: str) -> TokenConstraint | None:
        ll_tokenizer = self._load()
        if ll_tokenizer is None:
            return None
        import llguidance

        template = self._matchers.get(grammar)
        if template is None:
            template = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
            if template.is_error():
                log.warning("cannot constrain %s: %s", what, template.get_error())
                return None
            self._matchers[grammar] = template
        words = (int(ll_tokenizer.vocab_size) + 31) // 32
        return TokenConstraint(template.deep_copy(), words)
