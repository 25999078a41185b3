"""The audit trail: every tool call, its decision, who made it, and what came of it.

One row per call in the store's ``tool_calls`` table. Arguments are redacted before they are
written: any value whose key looks like a secret (``password``, ``api_key``, ``Authorization``, …),
at any depth, is stored as ``"[redacted]"``. The model and the approval dialog still see the real
arguments; only the file on disk does not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from smoltui.orchestrator.store import Store, StoredToolCall

if TYPE_CHECKING:
    from smoltui.orchestrator.approval import ToolCall
    from smoltui.tools.base import ToolResult

REDACTED = "[redacted]"

AuditEntry = StoredToolCall

# Matched against the key's words (``sessionToken`` -> ``session token``), so ``max_tokens`` and
# ``author`` stay readable while ``access_token`` and ``auth_header`` do not.
_SECRET_WORDS = frozenset({"password", "passwd", "secret", "token", "authorization", "auth", "cookie",
                           "apikey", "passphrase", "credentials"})
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")})
_SECRET_COMPACT = ("password", "passwd", "apikey", "privatekey", "accesskey", "authorization")


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a credential (case-insensitive; snake, kebab or camel case)."""
    if not isinstance(key, str):
        return False
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).lower()
    words = re.findall(r"[a-z0-9]+", spaced)
    if any(w in _SECRET_WORDS for w in words):
        return True
    if any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False)):
        return True
    compact = "".join(words)
    return any(fragment in compact for fragment in _SECRET_COMPACT)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-keyed value (in nested dicts and lists) replaced."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


class AuditLog:
    """Writes and reads the audit trail (coroutines on the store's connection)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(
        self,
        call: ToolCall,
        *,
        decision: str,
        decided_by: str,
        result: ToolResult | None,
        duration_s: float | None,
        started_at: float | None = None,
        original_arguments: Mapping[str, Any] | None = None,
    ) -> int:
        """Write one row for ``call``; returns its id.

        ``result=None`` writes the decision of a call that is about to run; :meth:`complete` adds
        the result afterwards. ``original_arguments`` are the model's arguments when the user
        edited them (``call.arguments`` then holds the edited ones).
        """
        return await self.store.add_tool_call(
            created_at=time.time() if started_at is None else started_at,
            session_id=call.session_id,
            run_id=call.run_id,
            task_id=call.task_id,
            call_id=call.id,
            tool=call.tool,
            arguments=redact(call.arguments if call.arguments is not None else {}),
            original_arguments=None if original_arguments is None else redact(original_arguments),
            decision=decision,
            decided_by=decided_by,
            duration_s=duration_s,
            ok=None if result is None else result.ok,
            error=None if result is None else result.error,
            result_summary=None if result is None else result.summary(),
        )

    async def complete(self, entry_id: int, result: ToolResult, duration_s: float | None = None) -> None:
        """Add the result to a row written by ``record(..., result=None)``."""
        await self.store.finish_tool_call(
            entry_id,
            duration_s=result.duration_s if duration_s is None else duration_s,
            ok=result.ok,
            error=result.error,
            result_summary=result.summary(),
        )

    async def list(self, run_id: str | None = None, session_id: int | None = None, limit: int = 200) -> list[AuditEntry]:
        """Rows newest first, optionally only those of one run and/or one chat session."""
        return await self.store.tool_calls(run_id=run_id, session_id=session_id, limit=limit)
