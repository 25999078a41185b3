"""Text from files, models and tools made safe to print on a terminal.

Ids, names, titles, file names and tool output come from places nobody checked: a workflow file, a
model's reply, a GGUF's metadata, an MCP server. Printed raw, an ESC sequence in one of them moves the
cursor, recolours the screen, sets the window title or writes a hyperlink; a carriage return overwrites
what was printed before it on the line; a right-to-left override (U+202E) shows ``exe.txt`` where
``txt.exe`` was written. :func:`printable` writes every such character as a visible escape
(``\\x1b``, ``\\r``, ``\\u202e``) and leaves ordinary text, Korean and emoji included, as it is.
"""

from __future__ import annotations

import functools
import unicodedata

__all__ = ["printable"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Format characters (category Cf) that text needs in order to look right: the zero-width (non-)joiners
# that build emoji sequences and shape Persian and Indic scripts, and the tag characters that spell
# the subdivision flags (🏴 + tags). Every other Cf character is invisible or reorders what follows it.
_FORMAT_KEPT = frozenset({"\u200c", "\u200d", *(chr(c) for c in range(0xE0020, 0xE0080))})


@functools.lru_cache(maxsize=4096)
def _escape(char: str) -> str:
    """``char`` as it is printed: itself, or a visible escape."""
    if char in _NAMED:
        return _NAMED[char]
    category = unicodedata.category(char)
    # Cc: C0, DEL and C1 controls (ESC, CSI, OSC, DCS, ST and the rest); Cs: the lone surrogates a
    # file name with undecodable bytes carries (they cannot even be encoded for the terminal);
    # Zl, Zp: line and paragraph separators, which some terminals break the line at.
    if category in ("Cc", "Cs", "Zl", "Zp") or (category == "Cf" and char not in _FORMAT_KEPT):
        code = ord(char)
        if code <= 0xFF:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` with control characters, ESC sequences and bidi overrides written as visible escapes.

    For one-line values (ids, names, titles, file names) newlines and tabs are escaped too
    (``\\n``, ``\\t``); with ``multiline=True`` (tool output, a reply) they are kept, while a carriage
    return is still escaped, since it returns to the start of the line and overwrites it. A backslash
    already in the text is left as it is, so a Windows path stays readable. Anything not a ``str``
    is printed as ``str(text)``.
    """
    text = text if isinstance(text, str) else str(text)
    if text.isprintable():  # the usual case: nothing to do (a space is printable, "\t" is not)
        return text
    kept = ("\n", "\t") if multiline else ()
    return "".join(char if char in kept else _escape(char) for char in text)
