"""Found by reading the room log as a user, against a real server.

- A message that mentions you looked like any other: nothing told it apart
  when scrolling back (issue 15 asks for highlighted lines).
- Invisible characters (zero-width space, word joiner, BOM, line separator,
  Hangul filler) went to the terminal as they were: they hid inside words,
  and terminals that give them a width pushed the log's border out of line.
- After jumping to a search result far back, nothing said how to get back to
  the newest messages.
- At 40–60 columns the member list kept its 22 columns and left the log a
  sliver (16 columns at 40).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.style import Style
from textual.pilot import Pilot

from clubroom_tui.screens.search import SearchPanel
from clubroom_tui.widgets.message_log import MessageLog
from tests.conftest import RunningServer
from tests.contrast import AA_NORMAL_TEXT
from tests.tui.conftest import (
    MakeClient,
    ann_and_bob_in_lobby,
    hear_from,
    logged_in,
    say,
    screen_text,
    seed_room,
    wait_for,
    wait_for_text,
)
from tests.tui.test_contrast import ratios_of


def style_of(pilot: Pilot[Any], text: str) -> Style:
    """The style of the segment on screen that draws ``text``."""
    for strip in pilot.app.screen._compositor.render_strips():
        for segment in strip:
            if text in segment.text and segment.style is not None:
                return segment.style
    raise AssertionError(f"{text!r} is not drawn on its own")


async def test_a_message_mentioning_you_stands_out(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """bob's "@ann" line is drawn bold in its own readable colour; his other line is not."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await hear_from(pilot, bob, "lobby", "plain words", "@ann your turn")
        mention, plain = style_of(pilot, "@ann your turn"), style_of(pilot, "plain words")
        assert mention.bold and not plain.bold
        assert mention.color != plain.color
        assert min(ratios_of(pilot, "@ann your turn")) >= AA_NORMAL_TEXT


async def test_invisible_characters_show_as_visible_escapes(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """A zero-width space, word joiner, BOM, line separator and filler are shown, not hidden."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await bob.send("lobby", "pay\u200bpal word\u2060joiner \ufeffbom line\u2028sep \u3164x")
        shown = await wait_for_text(
            pilot, "pay\\u200bpal", "word\\u2060joiner", "\\ufeffbom", "line\\u2028sep", "\\u3164x"
        )
        for invisible in "\u200b\u2060\ufeff\u2028\u3164":
            assert invisible not in shown
        await bob.send("lobby", "family 👨\u200d👩\u200d👧")  # a joiner inside an emoji stays
        await wait_for_text(pilot, "family 👨\u200d👩\u200d👧")


async def test_after_a_jump_the_way_back_to_the_newest_is_shown(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Jumped to an old result: "newer messages below (ctrl+end)"; ctrl+end goes and hides it."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await bob.send("lobby", "the spare key is under the mat")
        await seed_room(bob, "lobby", 80)
        await wait_for_text(pilot, "old 000079")
        await say(pilot, "/search spare key")
        await wait_for(lambda: isinstance(pilot.app.screen, SearchPanel), "the search panel")
        await wait_for_text(pilot, "1 found")
        await pilot.press("enter")
        await wait_for_text(pilot, "bob: the spare key is under the mat")
        await wait_for_text(pilot, "↓ newer messages below (ctrl+end)")
        await pilot.press("ctrl+end")
        await wait_for_text(pilot, "old 000079")
        log = pilot.app.screen.query_one(MessageLog)
        await wait_for(lambda: log.following, "the log to follow again")
        hint = pilot.app.screen.query_one("#new-below")
        await wait_for(lambda: not hint.display, "the hint to go")


async def test_a_narrow_terminal_gives_the_log_the_width_and_ctrl_t_shows_members(
    server: RunningServer, config_dir: Path
) -> None:
    """At 60 columns the member list (22 wide) is hidden, at 100 shown; ctrl+t shows it anyway."""
    async with logged_in(server.url, config_dir, room="den", size=(60, 20)) as pilot:
        await say(pilot, "a line that would be squeezed beside the member list")
        shown = await wait_for_text(pilot, "ann: a line that would be squeezed")  # wraps at 60
        assert "Members (1)" not in shown
        await pilot.resize_terminal(100, 24)
        await wait_for_text(pilot, "Members (1)")
        await pilot.resize_terminal(60, 20)
        await wait_for(lambda: "Members (1)" not in screen_text(pilot.app), "the list to hide")
        await pilot.press("ctrl+t")
        await wait_for_text(pilot, "Members (1)")
