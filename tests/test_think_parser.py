"""The think parser gives the same thinking and answer however the stream is cut."""

from __future__ import annotations

import random

import pytest

from smoltui.backends.base import TextDelta, ThinkingDelta
from smoltui.backends.think_parser import ThinkParser

Delta = TextDelta | ThinkingDelta

STREAM = "<think>\nThe user asks 2 < 3? Yes.\nCheck </thin and <th.\n</think>\nYes, 2 < 3.\n<b>done</b>"
THINKING = "The user asks 2 < 3? Yes.\nCheck </thin and <th."
TEXT = "Yes, 2 < 3.\n<b>done</b>"


def run(chunks: list[str], *, start_in_thinking: bool = False) -> tuple[ThinkParser, list[Delta]]:
    parser = ThinkParser(start_in_thinking=start_in_thinking)
    deltas: list[Delta] = []
    for chunk in chunks:
        deltas += parser.feed(chunk)
    deltas += parser.flush()
    return parser, deltas


def joined(deltas: list[Delta]) -> tuple[str, str]:
    thinking = "".join(d.text for d in deltas if isinstance(d, ThinkingDelta))
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    return thinking, text


def check(chunks: list[str], thinking: str, text: str, **kwargs: bool) -> None:
    parser, deltas = run(chunks, **kwargs)
    assert all(d.text for d in deltas), deltas
    assert joined(deltas) == (thinking, text), chunks
    assert (parser.thinking, parser.text) == (thinking, text)


def test_whole_stream() -> None:
    check([STREAM], THINKING, TEXT)


def test_every_single_cut() -> None:
    for cut in range(len(STREAM) + 1):
        check([STREAM[:cut], STREAM[cut:]], THINKING, TEXT)


def test_every_pair_of_cuts() -> None:
    for first in range(len(STREAM) + 1):
        for second in range(first, len(STREAM) + 1):
            check([STREAM[:first], STREAM[first:second], STREAM[second:]], THINKING, TEXT)


def test_character_by_character() -> None:
    check(list(STREAM), THINKING, TEXT)


@pytest.mark.parametrize(
    ("stream", "thinking", "text"),
    [
        ("<think>\n\n</think>\nHello", "", "Hello"),  # SmolLM3's empty block
        ("<think>\nA\n\n</think>\n\nB", "A\n", "\nB"),  # only one newline belongs to the format
        ("<think>no newlines</think>answer", "no newlines", "answer"),
        ("before <think>\nx\n</think>\nafter", "x", "before after"),
        ("<think>\na\n</think>\nb <think>\nc\n</think>\nd", "ac", "b d"),
        (
            "a < b and b <= c, <thinking> is not a tag, nor <think or </think>",
            "",
            "a < b and b <= c, <thinking> is not a tag, nor <think or </think>",
        ),
        ("<think>\n<think> inside is text\n</think>\n", "<think> inside is text", ""),
        ("answer ends in <thi", "", "answer ends in <thi"),
        ("", "", ""),
    ],
)
def test_streams(stream: str, thinking: str, text: str) -> None:
    check([stream], thinking, text)
    check(list(stream), thinking, text)


def test_start_in_thinking() -> None:
    check(list("\nreasoning\n</think>\nanswer"), "reasoning", "answer", start_in_thinking=True)
    check(["reasoning</think>answer"], "reasoning", "answer", start_in_thinking=True)
    assert ThinkParser(start_in_thinking=True).in_thinking


def test_unterminated_thinking_flushes_as_thinking() -> None:
    parser = ThinkParser()
    assert parser.feed("<think>\nstill going\n</thi") == [ThinkingDelta("still going")]
    assert parser.in_thinking
    assert parser.flush() == [ThinkingDelta("\n</thi")]
    assert (parser.thinking, parser.text) == ("still going\n</thi", "")


def test_holds_back_only_a_possible_tag() -> None:
    parser = ThinkParser()
    assert parser.feed("Hello <") == [TextDelta("Hello ")]
    assert parser.feed("b>") == [TextDelta("<b>")]
    assert parser.feed("<thin") == []
    assert parser.feed("king") == [TextDelta("<thinking")]
    assert parser.feed("<think>") == []
    assert parser.in_thinking and parser.has_thinking
    assert parser.feed("\nhm") == [ThinkingDelta("hm")]
    assert parser.feed("\n") == []  # might be the newline before </think>
    assert parser.feed("more") == [ThinkingDelta("\nmore")]
    assert parser.feed("\n</think>") == []
    assert parser.feed("\n") == []
    assert parser.feed("ok") == [TextDelta("ok")]
    assert parser.flush() == []


def test_has_thinking_only_after_a_block() -> None:
    parser, _ = run(["plain answer"])
    assert not parser.has_thinking
    parser, _ = run(["<think>\n\n</think>\nplain answer"])
    assert parser.has_thinking and parser.thinking == ""


def test_random_chunkings() -> None:
    rng = random.Random(1234)
    alphabet = ["<think>", "</think>", "<", ">", "/", "\n", "a", " ", "<th", "ink>", "think"]
    for _ in range(500):
        stream = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        reference = run([stream])[1]
        cuts = sorted(rng.sample(range(len(stream) + 1), k=min(len(stream) + 1, rng.randint(1, 6))))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        check(chunks, *joined(reference))
