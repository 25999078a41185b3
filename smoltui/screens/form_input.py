"""An ``Input`` that never drops keys typed right after one of its own editing keys.

A key the Input binds (``ctrl+u``, ``ctrl+w``, ``ctrl+k``, …) is not handled where it arrives:
it goes back up to the screen and the app to be matched with a binding, while the keys typed after
it are already queued at the Input and inserted first. The action then runs on text that already
holds them, so ``ctrl+u`` followed at once by ``abc`` deletes ``abc`` too (a burst from a paste, a
fast typist, a terminal that sends keys in one read). Here the Input's own bindings run where the
key arrives, in order with the typing around them.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class FormInput(Input):
    """A form field: its own editing keys act in the order they were typed."""

    async def _on_key(self, event: events.Key) -> None:
        bindings = self._bindings.key_to_bindings.get(event.key, [])
        if bindings and event.key not in ("enter", "tab", "shift+tab"):
            event.stop()
            event.prevent_default()
            await self.run_action(bindings[0].action)
            return
        await super()._on_key(event)
