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

    def show(
        self,
        members: Iterable[str],
        *,
        online: bool = True,
        owner: str | None = None,
        typing: Iterable[str] = (),
    ) -> None:
        """List the members (★ the owner, ✎ who is typing); offline, nobody shows as present."""
        names = sorted(members, key=str.lower)
        self.border_title = f"Members ({len(names)})" if online else f"Last seen ({len(names)})"
        typists = {name.casefold() for name in typing}
        lines = [self._line(name, online, owner, typists) for name in names]
        self.update(Text("\n").join(lines))

    def _line(self, name: str, online: bool, owner: str | None, typists: set[str]) -> Text:
        you = name.lower() == self.me
        mark = "● " if online else "? "
        return Text.assemble(
            mark,
            plain(name, "bold" if you else ""),
            " (you)" if you else "",
            " ★" if owner is not None and name.casefold() == owner.casefold() else "",
            " ✎" if online and name.casefold() in typists else "",
        )
