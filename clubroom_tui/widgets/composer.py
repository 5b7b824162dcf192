"""The box under the conversation: Enter sends, Tab completes names, a paste is kept whole.

It is a small multi-line editor (Textual's ``TextArea``): one line high when
empty, it grows with the draft up to ``MAX_LINES`` lines (the stylesheet's
``max-height``) and scrolls beyond, so a long message can be read and fixed
before it goes. Shift+Enter, Alt+Enter or Ctrl+J start a new line; Up in an
empty box recalls the last message sent (in a box with text it moves the
cursor, as in any editor).

Nothing typed or pasted is ever dropped without a word:
- a paste keeps all its lines (the message is sent with its newlines, which
  the protocol allows);
- text longer than the limit stays in the box and is refused at Enter with
  how much too long it is;
- format characters such as the zero-width joiner inside typed emoji are
  kept (Textual drops keys it thinks unprintable);
- control characters show as visible stand-ins, as they do in the log: the
  text is drawn through ``visible_in_place`` and never reaches the terminal.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

from clubroom_tui.commands import complete_command
from clubroom_tui.plain import visible_in_place
from protocol import MAX_TEXT_LENGTH

# What a "new line" key reaches us as, terminal by terminal (Textual 8's parser):
# the kitty keyboard protocol gives "shift+enter", "alt+enter", "ctrl+enter";
# xterm's modifyOtherKeys gives "shift+\r" for Shift+Enter and a bare "\r" for
# Alt+Enter; Ctrl+J is a line feed, "ctrl+j", everywhere. Without either
# protocol Shift+Enter and Alt+Enter arrive as plain "enter" (they send).
NEWLINE_KEYS = frozenset({"shift+enter", "alt+enter", "ctrl+enter", "ctrl+j", "shift+\r", "\r"})

MAX_LINES = 5  # the box grows to this many lines, then scrolls (see clubroom.tcss)

# Keys the room (or the app) owns, which TextArea and its scrolling base would
# otherwise take while the box has the focus: pageup/pagedown scroll the log,
# ctrl+end jumps to the newest message, F6 opens the next room with mentions.
_NOT_OURS = frozenset(
    {"pageup", "pagedown", "ctrl+pageup", "ctrl+pagedown", "ctrl+home", "ctrl+end", "f6", "f7"}
)


def _editing_bindings() -> list[BindingType]:
    """TextArea's editing keys, without the ones the room screen and the app bind."""
    kept: list[BindingType] = []
    for binding in TextArea.BINDINGS:
        assert isinstance(binding, Binding)
        keys = [key.strip() for key in binding.key.split(",")]
        wanted = [key for key in keys if key not in _NOT_OURS and key != "up"]  # Up: recall
        if wanted:
            kept.append(Binding(",".join(wanted), binding.action, binding.description, show=False))
    return kept


class Composer(TextArea, inherit_bindings=False):
    """The message being written; announces it with ``Composer.Ready``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *_editing_bindings(),
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
            soft_wrap=True,
            tab_behavior="focus",
            highlight_cursor_line=False,
            id=id,
        )
        self.names = names
        self.last_sent = ""  # what Up brings back into an empty box

    # -- the text, as the screen and the tests see it ------------------------------

    @property
    def value(self) -> str:
        """The draft, newlines included."""
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        """Replace the draft and put the cursor at its end, where writing goes on."""
        self.load_text(text)
        self.move_cursor(self.document.end)

    @property
    def cursor_index(self) -> int:
        """The cursor as an offset into ``value``."""
        return self.document.get_index_from_location(self.cursor_location)

    def get_line(self, line_index: int) -> Text:
        """What is drawn: the line with control characters made visible, one for one.

        One character stands for one character, so the cursor stays where it is.
        """
        line = visible_in_place(self.document.get_line(line_index))
        return Text(line, end="", no_wrap=True)

    # -- keys ------------------------------------------------------------------------

    async def action_submit(self) -> None:
        """Hand the text over and clear the box, now (see ``clubroom_tui.keys``)."""
        text = self.text
        if not text.strip():
            return
        if len(text) > MAX_TEXT_LENGTH:
            self.post_message(self.TooLong(len(text)))
            return
        self.value = ""
        self.post_message(self.Ready(text))

    def action_newline(self) -> None:
        """Start a new line in the same message."""
        self._insert("\n")

    def action_recall(self) -> None:
        """Up: in an empty box, the last message sent from it (to fix or resend); else a line up."""
        if self.text:
            self.action_cursor_up()
        elif self.last_sent:
            self.value = self.last_sent

    async def _on_key(self, event: events.Key) -> None:
        """Enter sends; the newline keys add a line; format characters are kept.

        Everything else goes on to TextArea (printable characters) and then
        to the bindings.
        """
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            await self.action_submit()
            return
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

    async def _on_paste(self, event: events.Paste) -> None:
        """Insert the whole paste, every line of it, as one draft (never sent by itself)."""
        event.stop()
        event.prevent_default()
        text = event.text.replace("\r\n", "\n").replace("\r", "\n")
        if text:
            self._insert(text)

    def _insert(self, text: str) -> None:
        if self.read_only:
            return
        self.replace(text, *self.selection, maintain_selection_offset=False)
        self.scroll_cursor_visible()

    def action_complete(self) -> None:
        """Complete the name being typed (``al`` or ``@al`` → ``alice``); never moves the focus."""
        cursor = self.cursor_index
        before = self.text[:cursor]
        if _is_command_name(before):
            command = complete_command(before[1:])
            if command is None:
                self.app.bell()
            else:
                self._replace_span(0, cursor, command)
            return
        word = _WHITESPACE.split(before)[-1]
        stem = word.removeprefix("@")
        if not stem:
            return
        completion = complete_name(stem, self.names())
        if completion is None:
            self.app.bell()
            return
        self._replace_span(cursor - len(stem), cursor, completion)

    def _replace_span(self, start: int, end: int, text: str) -> None:
        """Replace ``value[start:end]`` and leave the cursor after the new text."""
        location = self.document.get_location_from_index
        self.replace(text, location(start), location(end), maintain_selection_offset=False)

    def restore(self, text: str) -> None:
        """Put back text that could not be sent, ahead of anything typed since."""
        self.value = f"{text} {self.text}" if self.text else text


_WHITESPACE = re.compile(r"\s")


def _is_command_name(before: str) -> bool:
    """Is the text before the cursor the start of a command name (``/to``, not ``//x``)?"""
    return before.startswith("/") and not before.startswith("//") and not _WHITESPACE.search(before)


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
