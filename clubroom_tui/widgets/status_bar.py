"""The one-line header: where you are, who you are, and how the connection is."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from clubroom_tui.client import ConnectionState
from clubroom_tui.plain import plain

STATE_LABELS = {
    ConnectionState.CONNECTED: "● connected",
    ConnectionState.CONNECTING: "◌ connecting…",
    ConnectionState.RECONNECTING: "◌ reconnecting…",
    ConnectionState.OFFLINE: "○ offline",
}


class StatusBar(Widget):
    """Shows ``place`` on the left and ``user`` and the connection ``state`` on the right."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "status-bar--connected",
        "status-bar--connecting",
        "status-bar--reconnecting",
        "status-bar--offline",
    }

    place: reactive[str] = reactive("")
    user: reactive[str] = reactive("")
    state: reactive[ConnectionState] = reactive(ConnectionState.CONNECTING)

    def __init__(self, place: str = "", *, user: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self.set_reactive(StatusBar.place, place)
        self.set_reactive(StatusBar.user, user)

    def on_mount(self) -> None:
        """Follow the app's connection state (data comes down, it is never asked for)."""
        self.watch(self.app, "connection_state", self._follow_state)

    def _follow_state(self, state: ConnectionState) -> None:
        self.state = state

    def render(self) -> Text:
        left = Text.assemble(("Clubroom", "bold"), " · ", plain(self.place))
        right = Text.assemble(
            plain(self.user),
            " · " if self.user else "",
            (
                STATE_LABELS[self.state],
                self.get_component_rich_style(f"status-bar--{self.state.value}"),
            ),
        )
        room_for_left = self.size.width - right.cell_len - 1
        if left.cell_len > room_for_left:  # the state must stay visible: shorten the place
            left.truncate(max(0, room_for_left), overflow="ellipsis")
        gap = max(1, self.size.width - left.cell_len - right.cell_len)
        return Text.assemble(left, " " * gap, right, no_wrap=True, overflow="ellipsis")
