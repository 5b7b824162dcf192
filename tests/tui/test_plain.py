"""Making other people's text safe: visible control characters, no markup."""

from __future__ import annotations

from clubroom_tui.plain import plain, printable


def test_control_characters_become_visible() -> None:
    """ESC, BEL, DEL and C1 controls are replaced by visible stand-ins."""
    assert printable("a\x1b[1mb\x07c\x7fd\x85e") == "a␛[1mb␇c␡d\\x85e"


def test_newline_and_tab_are_kept() -> None:
    """Multi-line messages keep their line breaks and tabs."""
    assert printable("one\n\ttwo") == "one\n\ttwo"


def test_direction_overrides_are_visible() -> None:
    """Right-to-left overrides cannot disguise what a message says."""
    assert printable("file\u202etxt.exe") == "file\\u202etxt.exe"


def test_plain_text_is_not_markup() -> None:
    """Brackets stay characters; nothing is parsed as style or link."""
    text = plain("[bold]x[/bold] [link=https://e.example]y[/link]")
    assert text.plain == "[bold]x[/bold] [link=https://e.example]y[/link]"
    assert text.spans == []
