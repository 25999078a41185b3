"""Search snippets: highlighted matches, and tool-call markup shown readably even when cut."""

from __future__ import annotations

import pytest

from smoltui.orchestrator.store import HIGHLIGHT_CLOSE, HIGHLIGHT_OPEN
from smoltui.screens import search


def snippet_content(snippet: str):  # noqa: ANN201
    """The store's snippet, written here with [ and ] for its highlight markers."""
    return search.snippet_content(snippet.replace("[", HIGHLIGHT_OPEN).replace("]", HIGHLIGHT_CLOSE))


def highlighted(snippet: str) -> list[str]:
    content = snippet_content(snippet)
    return [content.plain[span.start : span.end] for span in content.spans if "reverse" in str(span.style)]


@pytest.mark.parametrize(
    ("snippet", "shown"),
    [
        # Whole tags, the JSON on its own lines as the model writes it.
        (
            'Let me look. <tool_call>\n{"name": "[read]_file", "arguments": {}}\n</tool_call> Done',
            'Let me look. ⚙ {"name": "read_file", "arguments": {}} Done',
        ),
        # Cut by the snippet window: the end of an opening tag at the start…
        ('…call>{"name": "[read]_file"}</tool_call>…', '…⚙ {"name": "read_file"}…'),
        ('…tool_call>\n{"name": "[read]_file"}', '…⚙ {"name": "read_file"}'),
        # …the end of a closing tag at the start, the start of a tag at the end.
        ('…call>\nThe [answer] is 4.', "…The answer is 4."),
        ('…{"[path]": "a"}}</tool_call> After</tool…', '…{"path": "a"}} After…'),
        ("Reading [notes] now <tool_call…", "Reading notes now ⚙…"),
        ("Reading [notes] now <tool", "Reading notes now ⚙"),
    ],
)
def test_tool_call_tags_read_as_a_marker(snippet: str, shown: str) -> None:
    assert snippet_content(snippet).plain == shown
    assert len(highlighted(snippet)) == 1


def test_a_match_inside_a_tag_highlights_the_marker() -> None:
    # unicode61 splits "tool_call", so searching "tool" matches inside the tags.
    snippet = 'I will <[tool]_call>{"name": "x"}</[tool]_call> now'
    assert snippet_content(snippet).plain == 'I will ⚙ {"name": "x"} now'
    assert highlighted(snippet) == ["⚙"]


def test_plain_snippets_are_unchanged() -> None:
    snippet = "Tomatoes need [full] sun; <b> is not a tag we touch"
    assert snippet_content(snippet).plain == "Tomatoes need full sun; <b> is not a tag we touch"
    assert highlighted(snippet) == ["full"]


async def test_a_message_own_brackets_are_text_not_highlights(tmp_path) -> None:  # noqa: ANN001
    from smoltui.orchestrator.store import Store

    async with await Store.open(tmp_path / "smoltui.db") as store:
        session = await store.create_session()
        await store.add_message(session.id, "assistant", "The numbers were [1, 2] and the mean is 1.5")
        [hit] = await store.search("mean")
    content = search.snippet_content(hit.snippet)
    assert content.plain == "The numbers were [1, 2] and the mean is 1.5"
    assert [content.plain[s.start : s.end] for s in content.spans if "reverse" in str(s.style)] == ["mean"]
