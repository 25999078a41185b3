"""printable(): hostile ids and names reach the terminal as visible escapes, ordinary text as it is."""

from __future__ import annotations

import unicodedata

import pytest

from smoltui.safe_text import printable


@pytest.mark.parametrize(("hostile", "shown"), [
    ("\x1b]0;pwned\x07run", "\\x1b]0;pwned\\x07run"),           # OSC: sets the window title
    ("\x1b[2J\x1b[Hclean", "\\x1b[2J\\x1b[Hclean"),             # CSI: clears the screen
    ("\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\", "\\x1b]8;;http://evil/\\x1b\\link\\x1b]8;;\\x1b\\"),  # hyperlink
    ("\x9b31mred", "\\x9b31mred"),                               # C1 CSI, one byte
    ("\x90qdcs\x9c", "\\x90qdcs\\x9c"),                          # C1 DCS ... ST
    ("safe\rEVIL", "safe\\rEVIL"),                               # carriage return overwrites the line
    ("line one\nline two", "line one\\nline two"),
    ("tab\there", "tab\\there"),
    ("nul\x00del\x7fbell\x07bs\x08", "nul\\x00del\\x7fbell\\x07bs\\x08"),
    ("report\u202etxt.exe", "report\\u202etxt.exe"),            # right-to-left override
    ("\u2066isolate\u2069 \u200fmark", "\\u2066isolate\\u2069 \\u200fmark"),
    ("zero\u200bwidth\ufeffbom", "zero\\u200bwidth\\ufeffbom"),
    ("para\u2028graph\u2029", "para\\u2028graph\\u2029"),
    ("bad\udcffbyte.yaml", "bad\\udcffbyte.yaml"),                # a file name with an undecodable byte
])
def test_control_characters_are_escaped(hostile: str, shown: str) -> None:
    assert printable(hostile) == shown


@pytest.mark.parametrize("ordinary", [
    "load_data", "데이터 분석 파이프라인", "日本語のタイトル", "mañana café", "e\u0301", "مرحبا", "Привет",
    "🙂 done", "👩\u200d👩\u200d👧 family", "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f flag",
    "non\u00a0breaking", "C:\\Users\\me\\flow.yaml", "",
])
def test_ordinary_text_is_kept(ordinary: str) -> None:
    assert printable(ordinary) == ordinary


def test_multiline_keeps_newlines_and_tabs_but_not_carriage_returns() -> None:
    assert printable("a\n\tb\r\x1b[1m", multiline=True) == "a\n\tb\\r\\x1b[1m"


def test_no_control_survives_and_the_result_encodes() -> None:
    everything = "".join(map(chr, [*range(0x3000), *range(0xD800, 0xE000), *range(0xFE00, 0x10000), 0xE0001]))
    shown = printable(everything)
    assert not [c for c in shown if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    assert not [c for c in shown if unicodedata.category(c) == "Cf" and c not in "\u200c\u200d"]
    shown.encode("utf-8")  # no lone surrogate left to fail the terminal's encoder


def test_not_a_string_is_printed_as_its_str() -> None:
    assert printable(42) == "42"


def test_error_messages_print_escaped_and_keep_the_raw_text() -> None:
    from smoltui.errors import SmoltuiError

    error = SmoltuiError("unknown task `\x1b]0;pwned\x07`\nsecond line")
    assert str(error) == "unknown task `\\x1b]0;pwned\\x07`\nsecond line"
    assert error.message == "unknown task `\x1b]0;pwned\x07`\nsecond line"


def test_validate_prints_hostile_ids_escaped(tmp_path, capsys) -> None:
    from smoltui.cli import main

    path = tmp_path / "evil\x1b[2J.yaml"
    path.write_text('workflow:\n  id: w\n  tasks:\n    - {id: "a\\e[31m", type: llm_task, prompt: p}\n'
                    '    - {id: b, type: llm_task, prompt: p, depends_on: ["a\\e[32m\\u202e"]}\n', encoding="utf-8")
    code = main(["validate", "--home", str(tmp_path), str(path)])
    out = capsys.readouterr()
    assert code == 2
    *problems, summary = out.out.splitlines()  # (the summary's file name is cli/validate.py's to escape)
    assert problems and not [line for line in problems if "\x1b" in line or "\u202e" in line]
    assert "depends on unknown task `a\\x1b[32m\\u202e`" in out.out
    assert "evil\\x1b[2J.yaml:5:" in out.out


def test_a_key_clash_prints_escaped() -> None:
    from smoltui.config import KeyClash

    assert "\x1b" not in str(KeyClash("chat\x1b[2J", "ctrl+k", ("a\x1b", "b")))
