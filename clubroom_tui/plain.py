"""Other people's text made safe to show: never markup, never a terminal escape.

Message texts, usernames and room names come from other users. They are
always put into ``rich.text.Text`` objects (so ``[bold]`` stays literal) and
any control character is replaced by a visible stand-in first, so an ESC or
a bidirectional override can neither drive the terminal nor disguise text,
and an invisible character (a zero-width space) can neither hide in a word
nor break the layout.
"""

from __future__ import annotations

import re

from rich.style import Style
from rich.text import Text

# Controls and direction overrides; and characters that draw nothing but which
# terminals give a width Rich does not (so a line with one pushes the log's
# border out of place) or which hide text: zero-width space, word joiner and
# invisible operators, BOM, line/paragraph separators, Arabic letter mark,
# Mongolian vowel separator, Hangul fillers. The zero-width joiner (emoji
# sequences) and non-joiner (Persian) are real text and stay.
_UNSAFE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
    r"\u061c\u115f\u1160\u180e\u200b\u2028\u2029\u2060-\u2064\u3164\ufeff\uffa0]"
)


def _stand_in(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode "control pictures": ESC becomes ␛
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def printable(value: str) -> str:
    """The string with every control or direction-override character made visible."""
    return _UNSAFE.sub(_stand_in, value)


def plain(value: str, style: str | Style = "") -> Text:
    """Someone else's text as a ``Text`` that shows exactly its characters."""
    return Text(printable(value), style=style, end="")


def _one_for_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return "\ufffd"  # C1 controls and direction overrides: one visible mark


def visible_in_place(value: str) -> str:
    """Like ``printable`` but one character for one, for an editor with a cursor in it.

    Controls show as their pictures or ``�``; tabs and newlines are left to
    the editor, which lays them out (they are never sent to the terminal).
    """
    return _UNSAFE.sub(_one_for_one, value)
