"""The composer against a real server: whole pastes, too-long text explained, name completion."""

from __future__ import annotations

from pathlib import Path

from clubroom_tui.widgets.composer import Composer
from protocol import MAX_TEXT_LENGTH
from tests.conftest import RunningServer
from tests.tui.conftest import (
    MakeClient,
    ann_and_bob_in_lobby,
    ann_in_lobby,
    enter_room,
    member,
    paste,
    press_at_machine_speed,
    say,
    say_and_see,
    screen_text,
    type_at_machine_speed,
    type_into,
    wait_for,
    wait_for_text,
)


async def test_a_three_line_paste_is_sent_whole(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """A bracketed paste of three lines shows them all and is sent as one message with newlines."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        paste(pilot.app, "line one\nline two\r\nline three")
        shown = await wait_for_text(pilot, "line one", "line two", "line three")
        rows = shown.splitlines()
        first = next(n for n, row in enumerate(rows) if "line one" in row)
        assert "line two" in rows[first + 1] and "line three" in rows[first + 2]
        await pilot.press("enter")
        await wait_for(lambda: bob.rooms["lobby"].messages, "the message")
        assert bob.rooms["lobby"].messages[-1].text == "line one\nline two\nline three"


async def test_a_paste_over_the_limit_is_kept_and_explained(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """5,000 pasted characters stay; the screen says 1,000 too many; Enter sends nothing."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        paste(pilot.app, "x" * 5000)
        await wait_for_text(pilot, "5,000 characters, 1,000 over the 4,000 limit")
        await pilot.press("enter")
        await wait_for_text(pilot, "Nothing was sent; the text is still in the box.")
        composer = pilot.app.screen.query_one(Composer)
        assert composer.value == "x" * 5000
        assert not pilot.app.client.rooms["lobby"].messages
        composer.value = composer.value[:MAX_TEXT_LENGTH]  # as if trimmed by hand
        await wait_for(lambda: "over the" not in screen_text(pilot.app), "the warning to go")


async def test_pasted_control_characters_show_as_visible_escapes(
    server: RunningServer, config_dir: Path
) -> None:
    """ESC and friends pasted into the box are drawn as stand-ins, never sent to the terminal."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        paste(pilot.app, "a\x1b[31mb\x07c")
        shown = await wait_for_text(pilot, "a␛[31mb␇c")
        assert "\x1b" not in shown


async def test_tab_completes_a_member_name_and_keeps_the_focus(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """``@al`` + Tab becomes ``@alice``; Tab never leaves the composer (nor reaches Leave)."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        alice = await member(make_client, "lobby", "alice")
        await wait_for_text(pilot, "Members (2)")
        composer = pilot.app.screen.query_one(Composer)
        type_at_machine_speed(pilot.app, "hi @al")
        await pilot.press("tab")
        await wait_for(lambda: composer.value == "hi @alice ", "the completion")
        await pilot.press("tab", "tab", "enter")
        assert pilot.app.focused is composer
        await wait_for(lambda: alice.rooms["lobby"].messages, "the message")
        assert alice.rooms["lobby"].messages[-1].text == "hi @alice "
        assert "lobby" in pilot.app.client.rooms


async def test_shift_alt_enter_and_ctrl_j_start_new_lines_and_enter_sends(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Each newline key, as Textual delivers it, adds a line; only Enter sends, once, in order."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        press_at_machine_speed(
            pilot.app,
            ("a", "a"),
            ("shift+enter", "\r"),  # kitty keyboard protocol
            ("b", "b"),
            ("alt+enter", "\r"),
            ("c", "c"),
            ("ctrl+j", "\n"),  # a bare line feed
            ("d", "d"),
            ("shift+\r", "\r"),  # xterm modifyOtherKeys
            ("e", "e"),
            ("enter", "\r"),
        )
        await wait_for(lambda: bob.rooms["lobby"].messages, "the message")
        assert bob.rooms["lobby"].messages[-1].text == "a\nb\nc\nd\ne"
        assert pilot.app.screen.query_one(Composer).value == ""
        assert len(bob.rooms["lobby"].messages) == 1


async def test_up_in_an_empty_box_recalls_the_last_message_sent(
    server: RunningServer, config_dir: Path
) -> None:
    """Up brings back the last line sent here; in a box with text it changes nothing."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        composer = pilot.app.screen.query_one(Composer)
        await say(pilot, "first try")
        await wait_for(lambda: pilot.app.client.rooms["lobby"].messages, "the message")
        await pilot.press("up")
        await wait_for(lambda: composer.value == "first try", "the recalled line")
        composer.value = "other"
        await pilot.press("up")
        assert composer.value == "other"


async def test_drafts_and_recall_are_kept_per_room_while_switching(
    server: RunningServer, config_dir: Path
) -> None:
    """A half-written message waits in its room; the other room has its own draft and history."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say(pilot, "sent in lobby")
        await wait_for(lambda: pilot.app.client.rooms["lobby"].messages, "the message")
        await type_into(pilot, "#composer", "half a thought")
        await pilot.press("escape")
        await enter_room(pilot, "den", create=True)
        den = pilot.app.screen.query_one(Composer)
        assert den.value == ""
        await pilot.press("up")
        assert den.value == ""  # nothing was sent from den
        await type_into(pilot, "#composer", "den draft")
        await pilot.press("escape")
        await enter_room(pilot, "lobby", create=False)
        lobby = pilot.app.screen.query_one(Composer)
        assert lobby.value == "half a thought"
        lobby.value = ""
        await pilot.press("up")
        await wait_for(lambda: lobby.value == "sent in lobby", "the lobby's last line")
        await pilot.press("escape")
        await enter_room(pilot, "den", create=False)
        assert pilot.app.screen.query_one(Composer).value == "den draft"


async def test_editing_a_message_keeps_the_draft_for_afterwards(
    server: RunningServer, config_dir: Path
) -> None:
    """Editing borrows the box; Escape gives the half-written draft back, never loses it."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_see(pilot, "mine")
        await type_into(pilot, "#composer", "half written")
        await pilot.press("ctrl+up", "e")
        composer = pilot.app.screen.query_one(Composer)
        await wait_for(lambda: composer.value == "mine", "the edit in the box")
        await pilot.press("escape")
        await wait_for(lambda: composer.value == "half written", "the draft back")
