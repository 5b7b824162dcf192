"""The user's messages on their way, shown under the conversation until the server stores them.

They live here, not in the message log, so that sending never redraws the
log: a message moves into the log (appended) when its stored copy arrives.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from clubroom_tui.plain import plain


class Outbox(Static):
    """One line per message not yet confirmed: its text and where it stands."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self._items: dict[str, tuple[str, str]] = {}  # nonce → (text, status)
        self.display = False

    def show(self, nonce: str, text: str, status: str) -> None:
        """Add a message on its way, or change what it says about itself."""
        if self._items.get(nonce) == (text, status):
            return
        self._items[nonce] = (text, status)
        self._render_items()

    def drop(self, nonce: str) -> None:
        if self._items.pop(nonce, None) is not None:
            self._render_items()

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._items

    def _render_items(self) -> None:
        lines = [
            Text.assemble("  ⋯  ", plain(text), f"  ({status})")
            for text, status in self._items.values()
        ]
        self.update(Text("\n").join(lines))
        self.display = bool(lines)
