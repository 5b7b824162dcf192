"""Who is in the room, with you marked."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import Static

from clubroom_tui.plain import plain


class MemberList(Static):
    """A read-only list of member names; its data is set with ``show()``."""

    def __init__(self, me: str, *, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self.me = me.lower()
        self.border_title = "Members"

    def show(self, members: Iterable[str]) -> None:
        names = sorted(members, key=str.lower)
        self.border_title = f"Members ({len(names)})"
        lines = [self._line(name) for name in names]
        self.update(Text("\n").join(lines))

    def _line(self, name: str) -> Text:
        you = name.lower() == self.me
        return Text.assemble("● ", plain(name, "bold" if you else ""), " (you)" if you else "")
