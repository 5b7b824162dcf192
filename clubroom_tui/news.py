"""The Textual message that carries client events from the network worker to the UI."""

from __future__ import annotations

from textual.message import Message

from clubroom_tui.client import ClientEvent


class ClientNews(Message, bubble=False):
    """Something happened on the connection; the app handles it, then hands it to the screen."""

    def __init__(self, event: ClientEvent) -> None:
        super().__init__()
        self.event = event
