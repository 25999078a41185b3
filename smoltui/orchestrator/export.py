"""Chat sessions as Markdown files a person can read, share or keep in git."""

from __future__ import annotations

import asyncio
import json
import os
import re
import unicodedata
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from smoltui.errors import StoreError
from smoltui.orchestrator.store import Session, Store
from smoltui.orchestrator.transcript import Called, Entry, load_transcript

ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def session_to_markdown(session: Session, entries: list[Entry], *, include_thinking: bool = True) -> str:
    """Render a chat: title, model and date, then one ``### Role`` section per message, and each tool
    call with the arguments it ran with and how it ended."""
    title = session.title.strip() or "Untitled chat"
    meta = [f"Model: {session.model}"] if session.model else []
    meta.append(datetime.fromtimestamp(session.created_at).strftime("%Y-%m-%d %H:%M"))
    parts = [f"# {title}", f"*{' · '.join(meta)}*"]
    for entry in entries:
        if isinstance(entry, Called):
            parts.append(_call_markdown(entry))
            continue
        parts.append(f"### {ROLE_HEADINGS.get(entry.role, entry.role.title())}")
        if include_thinking and entry.thinking and entry.thinking.strip():
            # Blank lines around the body let Markdown inside <details> render as Markdown.
            parts.append(f"<details><summary>Thinking</summary>\n\n{entry.thinking.strip()}\n\n</details>")
        parts.append(entry.text.strip())
        if entry.role == "assistant" and entry.stats:
            line = _stats_line(entry.stats, cut_off=entry.cut_off)
            if line:
                parts.append(line)
    return "\n\n".join(part for part in parts if part) + "\n"


def _call_markdown(call: Called) -> str:
    if call.error:
        return f"**Tool call** `{call.name or '?'}`: could not be read ({call.error})"
    try:
        arguments = json.dumps(json.loads(call.arguments), ensure_ascii=False, indent=2)
    except json.JSONDecodeError:
        arguments = call.arguments
    outcome = "waiting (never answered)" if call.ok is None else ("✓ " if call.ok else "✗ ") + (call.summary or "")
    who = f" ({call.decision} by {call.decided_by})" if call.decision and call.decided_by else ""
    return f"**Tool call** `{call.name}`{who}\n\n```json\n{arguments}\n```\n\n{outcome}"


async def export_session(store: Store, session_id: int, dest: Path) -> Path:
    """Write a session as Markdown to ``dest`` and return the path written.

    If ``dest`` is a directory the file is named ``chat-<id>-<slug of title>.md`` inside it.
    The file appears whole or not at all: an existing file is only replaced once the new one is
    fully written.
    """
    session = await store.get_session(session_id)
    text = session_to_markdown(session, await load_transcript(store, session_id))
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / f"chat-{session.id}-{slugify(session.title)}.md"
    await asyncio.to_thread(_write_atomically, dest, text)
    return dest


def slugify(title: str, max_length: int = 60) -> str:
    """A file-name-safe slug; keeps non-Latin letters so a Korean title still names the file."""
    text = unicodedata.normalize("NFKC", title).lower()
    slug = re.sub(r"[\W_]+", "-", text).strip("-")[:max_length].rstrip("-")
    return slug or "untitled"


def _stats_line(stats: dict[str, Any], *, cut_off: bool = False) -> str:
    bits = []
    if isinstance(stats.get("completion_tokens"), int | float):
        bits.append(f"{int(stats['completion_tokens'])} tokens")
    if isinstance(stats.get("decode_tok_s"), int | float):
        bits.append(f"{stats['decode_tok_s']:.1f} tok/s")
    if isinstance(stats.get("ttft_s"), int | float):
        bits.append(f"TTFT {stats['ttft_s']:.2f} s")
    if cut_off or stats.get("stop_reason") == "cancelled":
        bits.append("cut off")  # the reply stopped before its end: what follows was never said
    return f"*{' · '.join(bits)}*" if bits else ""


def _write_atomically(dest: Path, text: str) -> None:
    # The temp file lives in the destination directory so os.replace is a same-filesystem rename.
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # os.open with 0o666 lets the umask decide the final mode, like a plain open() would;
        # tempfile would leave the export readable by its owner only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise StoreError(
            f"cannot write {dest}: {err.strerror or err}; choose another file or directory"
        ) from err
