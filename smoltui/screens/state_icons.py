"""One icon and one colour per run or task state, wherever a state is shown (tree, run view, CLI)."""

from __future__ import annotations

STATE_STYLES: dict[str, tuple[str, str]] = {
    "pending": ("·", "dim"),
    "ready": ("·", "dim"),
    "running": ("●", "bold yellow"),
    "retrying": ("↻", "yellow"),
    "awaiting approval": ("?", "bold magenta"),
    "succeeded": ("✓", "green"),
    "skipped": ("-", "cyan"),
    "failed": ("✗", "bold red"),
    "upstream_failed": ("✗", "red"),
    "cancelled": ("■", "magenta"),
    "interrupted": ("↯", "yellow"),
}


def state_style(state: str) -> tuple[str, str]:
    """(icon, rich style) for a state; an unknown one gets a question mark."""
    return STATE_STYLES.get(state, ("?", ""))
