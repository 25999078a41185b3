"""The stats line under a reply."""

from smoltui.screens.message_view import format_stats


def test_the_stats_line_counts_tokens_in_good_english() -> None:
    assert format_stats({"completion_tokens": 1}) == "1 token"
    assert format_stats({"completion_tokens": 42, "decode_tok_s": 12.34}).startswith("42 tokens · 12.3 tok/s")
