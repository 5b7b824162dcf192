"""The box under the conversation: Enter sends, Tab completes names, a paste is kept whole.

Shift+Enter, Alt+Enter or Ctrl+J start a new line; Up in an empty box
recalls the last message sent.

Nothing typed or pasted is ever dropped without a word:
- a paste keeps all its lines (the message is sent with its newlines, which
  the protocol allows; they show as ``↵`` while composing);
- text longer than the limit stays in the box and is refused at Enter with
  how much too long it is;
- format characters such as the zero-width joiner inside typed emoji are
  kept (Textual drops keys it thinks unprintable);
- control characters show as visible stand-ins, as they do in the log.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input

from clubroom_tui.commands import complete_command
from clubroom_tui.plain import visible_in_place
from protocol import MAX_TEXT_LENGTH

# What a "new line" key reaches us as, terminal by terminal (Textual 8's parser):
# the kitty keyboard protocol gives "shift+enter", "alt+enter", "ctrl+enter";
# xterm's modifyOtherKeys gives "shift+\r" for Shift+Enter and a bare "\r" for
# Alt+Enter; Ctrl+J is a line feed, "ctrl+j", everywhere. Without either
# protocol Shift+Enter and Alt+Enter arrive as plain "enter" (they send).
NEWLINE_KEYS = frozenset({"shift+enter", "alt+enter", "ctrl+enter", "ctrl+j", "shift+\r", "\r"})


class Composer(Input):
    """The message being written; announces it with ``Composer.Ready``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "Complete name", show=False),
        Binding("up", "recall", "Last sent", show=False),
    ]

    class Ready(Message):
        """The user pressed Enter on some text; the box is already empty."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class TooLong(Message):
        """Enter was pressed on a text over the limit; it stays in the box."""

        def __init__(self, length: int) -> None:
            super().__init__()
            self.length = length

    def __init__(
        self,
        room: str,
        names: Callable[[], Iterable[str]] = tuple,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(
            placeholder=f"Message {room} — Enter sends, Tab completes, /help",
            id=id,
        )
        self.names = names
        self.last_sent = ""  # what Up brings back into an empty box

    @property
    def _value(self) -> Text:
        """What is drawn: the text with newlines and control characters made visible.

        One character stands for one character, so the cursor stays where it is.
        """
        return Text(visible_in_place(self.value), no_wrap=True, overflow="ignore", end="")

    async def action_submit(self) -> None:
        """Hand the text over and clear the box, now (see ``clubroom_tui.keys``)."""
        text = self.value
        if not text.strip():
            return
        if len(text) > MAX_TEXT_LENGTH:
            self.post_message(self.TooLong(len(text)))
            return
        self.value = ""
        self.post_message(self.Ready(text))

    def action_newline(self) -> None:
        """Start a new line in the same message (shown as ``↵`` while composing)."""
        self._insert("\n")

    def action_recall(self) -> None:
        """Up in an empty box brings back the last message sent from it, to fix or resend."""
        if self.value or not self.last_sent:
            return
        self.value = self.last_sent
        self.cursor_position = len(self.value)

    def _on_key(self, event: events.Key) -> None:
        """Keep format characters (zero-width joiner, variation selectors) that arrive as keys."""
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        char = event.character
        if char and len(char) == 1 and not event.is_printable and _is_format(char):
            event.stop()
            event.prevent_default()
            self._insert(char)

    def _on_paste(self, event: events.Paste) -> None:
        """Insert the whole paste, every line of it (Input alone keeps only the first)."""
        event.stop()
        event.prevent_default()
        text = event.text.replace("\r\n", "\n").replace("\r", "\n")
        if text:
            self._insert(text)

    def _insert(self, text: str) -> None:
        selection = self.selection
        if selection.is_empty:
            self.insert_text_at_cursor(text)
        else:
            self.replace(text, *selection)

    def action_complete(self) -> None:
        """Complete the name being typed (``al`` or ``@al`` → ``alice``); never moves the focus."""
        before = self.value[: self.cursor_position]
        if before.startswith("/") and " " not in before and not before.startswith("//"):
            command = complete_command(before[1:])
            if command is None:
                self.app.bell()
            else:
                self.replace(command, 0, self.cursor_position)
            return
        word = before.rsplit(" ", 1)[-1]
        stem = word.removeprefix("@")
        if not stem:
            return
        completion = complete_name(stem, self.names())
        if completion is None:
            self.app.bell()
            return
        start = self.cursor_position - len(stem)
        self.replace(completion, start, self.cursor_position)

    def restore(self, text: str) -> None:
        """Put back text that could not be sent, ahead of anything typed since."""
        self.value = f"{text} {self.value}" if self.value else text
        self.cursor_position = len(self.value)


def complete_name(stem: str, names: Iterable[str]) -> str | None:
    """The completion of ``stem`` among ``names``, case-insensitively, or None.

    One match completes fully and adds a space; several complete as far as
    they agree.
    """
    folded = stem.casefold()
    matches = sorted({n for n in names if n.casefold().startswith(folded)}, key=str.casefold)
    if not matches:
        return None
    if len(matches) == 1:
        return matches[0] + " "
    agreed = _agreed_length([m.casefold() for m in matches])
    return matches[0][:agreed] if agreed > len(stem) else None


def _agreed_length(words: list[str]) -> int:
    """How many leading characters all the words share."""
    length = 0
    for letters in zip(*words, strict=False):
        if len(set(letters)) != 1:
            break
        length += 1
    return length


def _is_format(char: str) -> bool:
    return unicodedata.category(char) in ("Cf", "Mn", "Me", "Mc")
