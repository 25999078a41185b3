"""Split a streamed ``<think>…</think>`` block from the answer.

Models like SmolLM3 write ``<think>\\n{reasoning}\\n</think>\\n{answer}``. The stream arrives in chunks
that can cut a tag anywhere (``"<th"``, ``"ink>"``), so the parser keeps back only the few characters
that could still become a tag and releases everything else at once.

Newlines around the tags are part of the format, not of the content: one ``"\\n"`` right after
``<think>``, one right before ``</think>`` and one right after ``</think>`` are dropped. That makes
``"<think>\\n" + thinking + "\\n</think>\\n" + text`` reproduce what the model generated, which is how
:class:`~smoltui.backends.chat_template.ChatTemplate` re-renders past turns so the KV cache still matches.

Every ``<think>`` outside a block opens one and every ``</think>`` inside closes it; any other ``<``
(``a < b``, ``<thinking>``, a stray ``</think>`` in the answer) is plain text.
"""

from __future__ import annotations

from smoltui.backends.base import TextDelta, ThinkingDelta

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

# Inside a block the newline before the closing tag belongs to the format, so a trailing "\n" must wait
# until we know whether "</think>" follows it.
_INSIDE_PATTERNS = ("\n" + CLOSE_TAG, CLOSE_TAG)
_OUTSIDE_PATTERNS = (OPEN_TAG,)

Delta = TextDelta | ThinkingDelta


def _partial_tag_len(buffer: str, patterns: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``buffer`` that is a proper prefix of one of ``patterns``."""
    best = 0
    for pattern in patterns:
        for size in range(min(len(pattern) - 1, len(buffer)), best, -1):
            if buffer.endswith(pattern[:size]):
                best = size
                break
    return best


class ThinkParser:
    """Streaming state machine: feed chunks, get text and thinking deltas, never an empty one."""

    def __init__(self, *, start_in_thinking: bool = False) -> None:
        # start_in_thinking is for templates whose generation prompt already opened "<think>".
        self._inside = start_in_thinking
        self._drop_newline = start_in_thinking
        self._has_thinking = start_in_thinking
        self._buffer = ""
        self._thinking: list[str] = []
        self._text: list[str] = []

    @property
    def thinking(self) -> str:
        """All thinking released so far."""
        return "".join(self._thinking)

    @property
    def text(self) -> str:
        """All answer text released so far."""
        return "".join(self._text)

    @property
    def has_thinking(self) -> bool:
        """Whether a think block was opened (an empty one counts: it is part of the generated turn)."""
        return self._has_thinking

    @property
    def in_thinking(self) -> bool:
        return self._inside

    def feed(self, text: str) -> list[Delta]:
        self._buffer += text
        out: list[Delta] = []
        while True:
            if self._drop_newline and self._buffer:
                if self._buffer.startswith("\n"):
                    self._buffer = self._buffer[1:]
                self._drop_newline = False
            if not self._buffer:
                break
            if self._inside:
                at = self._buffer.find(CLOSE_TAG)
                if at < 0:
                    self._release(out, _partial_tag_len(self._buffer, _INSIDE_PATTERNS))
                    break
                body = self._buffer[:at]
                if body.endswith("\n"):
                    body = body[:-1]
                self._emit(out, body)
                self._buffer = self._buffer[at + len(CLOSE_TAG) :]
                self._inside = False
            else:
                at = self._buffer.find(OPEN_TAG)
                if at < 0:
                    self._release(out, _partial_tag_len(self._buffer, _OUTSIDE_PATTERNS))
                    break
                self._emit(out, self._buffer[:at])
                self._buffer = self._buffer[at + len(OPEN_TAG) :]
                self._inside = True
                self._has_thinking = True
            self._drop_newline = True
        return out

    def flush(self) -> list[Delta]:
        """End of stream: release what was held back. An unterminated block stays thinking."""
        out: list[Delta] = []
        self._emit(out, self._buffer)
        self._buffer = ""
        return out

    def _release(self, out: list[Delta], keep: int) -> None:
        cut = len(self._buffer) - keep
        self._emit(out, self._buffer[:cut])
        self._buffer = self._buffer[cut:]

    def _emit(self, out: list[Delta], chunk: str) -> None:
        if not chunk:
            return
        if self._inside:
            self._thinking.append(chunk)
            out.append(ThinkingDelta(chunk))
        else:
            self._text.append(chunk)
            out.append(TextDelta(chunk))
