"""The dashboard's list of the rooms you are in, with unread counts."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from clubroom_tui.plain import plain


class RoomList(OptionList):
    """Pick a room with the arrows and Enter; announces it with ``RoomList.Opened``."""

    class Opened(Message):
        def __init__(self, room: str) -> None:
            super().__init__()
            self.room = room

    def show(self, rooms: Iterable[tuple[str, int] | tuple[str, int, int]]) -> None:
        """Replace the list with (room, unread[, mentions]) tuples, keeping the highlight."""
        highlighted = self.highlighted
        self.clear_options()
        options = [Option(self._prompt(*room), id=room[0]) for room in rooms]
        if not options:
            options = [Option(Text("You are in no rooms yet.", style="italic"), disabled=True)]
        self.add_options(options)
        if options[0].disabled:
            return
        keep = highlighted is not None and highlighted < self.option_count
        self.highlighted = highlighted if keep else 0

    @staticmethod
    def _prompt(name: str, unread: int, mentions: int = 0) -> Text:
        prompt = Text.assemble("# ", plain(name, "bold"))
        if unread:
            prompt.append(f"  ({unread} unread)", style="reverse")
        if mentions:
            plural = "s" if mentions != 1 else ""
            prompt.append(f"  @ {mentions} mention{plural}", style="bold reverse")
        return prompt

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Opened(event.option.id))
