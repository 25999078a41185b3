"""Config values have sane minimums however they are set; [keymap] entries are Textual keys; a key bound
twice in one context is found."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

from smoltui.config import (
    KEY_NAMES,
    MAX_CONFIG_BYTES,
    MODIFIERS,
    Config,
    KeyClash,
    key_clashes,
    load_config,
    normalize_key,
)
from smoltui.errors import ConfigError


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=environ or {})


@pytest.mark.parametrize(("toml", "where"), [
    ("[model]\nn_ctx = 10", "model.n_ctx"),
    ("[model]\nthreads = 0", "model.threads"),
    ("[model]\nn_batch = 1", "model.n_batch"),
    ("[transformers]\nmax_context = 16", "transformers.max_context"),
    ("[openai]\ncontext_size = 16", "openai.context_size"),
    ("[openai]\ntimeout = 0.001", "openai.timeout"),
    ("[chat]\nmax_tokens = 0", "chat.max_tokens"),
    ("[chat]\nmax_tokens = 100000000000", "chat.max_tokens"),
    ("[chat]\ntop_k = -1", "chat.top_k"),
    ("[chat]\nrepeat_penalty = 0", "chat.repeat_penalty"),
    ("[chat]\nseed = -1", "chat.seed"),
    ("[chat]\nseed = 4294967296", "chat.seed"),
    ("[workflows]\napproval_timeout_s = 0.01", "workflows.approval_timeout_s"),
])
def test_numbers_below_their_minimum_are_refused(tmp_path: Path, toml: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, toml + "\n")
    assert f"config.toml: {where}: Input should be" in str(info.value)


def test_the_environment_is_held_to_the_same_minimum(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.n_ctx: Input should be greater than or equal to 256"):
        _load(tmp_path, "", {"SMOLTUI_N_CTX": "10"})


def test_a_value_set_after_loading_is_checked_too() -> None:
    """What --n-ctx does (cli/common.py assigns it): too small, it was a numpy broadcast error later."""
    config = Config()
    with pytest.raises(ConfigError, match=r"^model\.n_ctx = 10: Input should be greater than or equal to 256$"):
        config.model.n_ctx = 10
    with pytest.raises(ConfigError, match=r"^model\.threads = -1: "):
        config.model.threads = -1
    with pytest.raises(ConfigError, match=r"^keymap = .*unknown key `nonsense`"):
        config.keymap = {"chat.think": "ctrl+nonsense"}
    config.model.n_ctx = 8192
    assert config.model.n_ctx == 8192


def test_an_oversized_or_too_deeply_nested_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"larger than 1 MiB"):
        _load(tmp_path, "# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"TOML error: arrays or tables nested too deeply"):
        _load(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n")


# --- [keymap] ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("written", "kept"), [
    ("ctrl+k", "ctrl+k"),
    ("Ctrl+Shift+Up", "ctrl+shift+up"),
    ("shift+ctrl+x", "ctrl+shift+x"),  # Textual writes modifiers in alphabetical order
    ("super+alt+f12", "alt+super+f12"),
    ("ctrl+/", "ctrl+slash"),
    ("f2, ctrl+k", "f2,ctrl+k"),  # Textual splits on "," and does not strip the spaces
    ("A", "A"),
    ("escape", "escape"),
    ("+", "plus"),
    ("ctrl++", "ctrl+plus"),
    ("ctrl+ä", "ctrl+ä"),
    ("PageDown", "pagedown"),
])
def test_keymap_entries_are_written_as_textual_matches_them(tmp_path: Path, written: str, kept: str) -> None:
    config = _load(tmp_path, f'[keymap]\n"chat.think" = "{written}"\n')
    assert config.keymap == {"chat.think": kept}


@pytest.mark.parametrize(("written", "why"), [
    ("ctrl+shift+alt+nonsense", "unknown key `nonsense`"),
    ("cmd+k", "`cmd` in 'cmd+k' is not a modifier"),
    ("ctrl+ctrl+k", "names a modifier twice"),
    ("ctrl+", "has no key after its modifiers"),
    ("", "no key given"),
    ("f2,", "an empty key"),
    ("ctrl+ ", "has no key after its modifiers"),
    ("f99", "unknown key `f99`"),
    ("\\u001b", "control character"),
])
def test_a_bad_keymap_entry_names_the_binding_and_the_key(tmp_path: Path, written: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f'[keymap]\n"chat.think" = "{written}"\n')
    message = str(info.value)
    assert "config.toml: keymap.chat.think: " in message and why in message, message
    assert "\n" not in message


def test_the_key_table_knows_every_key_textual_names() -> None:
    from textual._keyboard_protocol import FUNCTIONAL_KEYS
    from textual.keys import Keys, _character_to_key

    named = {key.value.split("+")[-1] for key in Keys} - {"<any>", "<ignore>", "<scroll-down>", "<scroll-up>", "@"}
    for name in named | set(FUNCTIONAL_KEYS.values()):
        assert normalize_key(f"ctrl+{name}") == f"ctrl+{name}", name
    for char in string.punctuation + string.ascii_letters + string.digits:
        assert normalize_key(char) == _character_to_key(char), char
    assert len(KEY_NAMES) > 100


def test_modifiers_are_in_the_order_textual_writes_them() -> None:
    from textual import events

    assert list(MODIFIERS) == sorted(MODIFIERS)
    # Textual's key events put sorted modifiers before the key (see textual._xterm_parser).
    assert events.Key("alt+ctrl+x", None).key == normalize_key("ctrl+alt+x")


# --- a key bound twice in one context ----------------------------------------------------------------

BINDINGS = {
    "app.quit": ("app", "ctrl+q"),
    "chat.send": ("chat", "enter"),
    "chat.think": ("chat", "ctrl+t"),
    "search.open": ("chat", "ctrl+f"),
    "chat.tools": ("chat", "f5"),
    "run.cancel": ("run", "c"),
    "run.retry": ("run", "r"),
    "logs.end": ("logs", "end,G"),
}


def test_no_clash_with_the_defaults_or_across_contexts() -> None:
    assert key_clashes({}, BINDINGS) == []
    assert key_clashes({"run.cancel": "ctrl+t"}, BINDINGS) == []  # run and chat are different contexts
    assert key_clashes({"chat.think": "ctrl+f", "search.open": "ctrl+k"}, BINDINGS) == []  # moved away


def test_two_ids_on_one_key_in_one_context_are_reported() -> None:
    clashes = key_clashes({"chat.think": "ctrl+f"}, BINDINGS)
    assert clashes == [KeyClash("chat", "ctrl+f", ("chat.think", "search.open"))]
    assert str(clashes[0]) == ("[keymap] puts chat.think, search.open on the same key (ctrl+f) in chat; "
                               "only one of them works")
    both = key_clashes({"run.retry": "C,c", "chat.tools": "F5,ctrl+t"}, BINDINGS)
    assert both == [KeyClash("chat", "ctrl+t", ("chat.think", "chat.tools")),
                    KeyClash("run", "c", ("run.cancel", "run.retry"))]


def test_keys_the_terminal_sends_alike_clash() -> None:
    """ctrl+m is enter to a terminal, ctrl+i is tab; written differently, they are one key."""
    assert key_clashes({"chat.think": "ctrl+m"}, BINDINGS) == [KeyClash("chat", "enter", ("chat.send", "chat.think"))]


def test_a_binding_active_everywhere_clashes_in_every_context() -> None:
    keymap = {"run.retry": "ctrl+q"}
    assert key_clashes(keymap, BINDINGS) == []
    assert key_clashes(keymap, BINDINGS, everywhere={"app"}) == [KeyClash("run", "ctrl+q", ("app.quit", "run.retry"))]
