"""The input box under the conversation: Enter sends, a failed send puts the text back."""

from __future__ import annotations

from textual.message import Message
from textual.widgets import Input

from protocol import MAX_TEXT_LENGTH


class Composer(Input):
    """One line of text to send; announces it with ``Composer.Ready``."""

    class Ready(Message):
        """The user pressed Enter on some text; the box is already empty."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, room: str, *, id: str | None = None) -> None:
        super().__init__(
            placeholder=f"Message {room} — Enter sends",
            max_length=MAX_TEXT_LENGTH,
            id=id,
        )

    async def action_submit(self) -> None:
        """Hand the text over and clear the box; blank text does nothing."""
        text = self.value
        if not text.strip():
            return
        self.post_message(self.Ready(text))
        self.value = ""

    def restore(self, text: str) -> None:
        """Put back text that could not be sent, ahead of anything typed since."""
        self.value = f"{text} {self.value}" if self.value else text
        self.cursor_position = len(self.value)
