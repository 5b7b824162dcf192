"""Found by driving the client as a user: acting on a chosen message, against a real server.

- The owner of a room whose name is not all lower case ("Lobby") was told
  "Only bob can delete that message." although the server lets owners delete.
- A deleted message could still be reacted to (the picker opened, then the
  server refused) and "copied" (an empty clipboard, "Copied the message's text.").
- In the reaction picker, typing `:tada:` did nothing: the focus was on the
  first button, and the free-entry field took a Tab per button to reach.
- While editing, the footer still said "esc Dashboard" although Escape cancels.
"""

from __future__ import annotations

from pathlib import Path

from clubroom_tui.screens.react import ReactPicker
from tests.conftest import RunningServer
from tests.tui.conftest import (
    MakeClient,
    ann_in_lobby,
    choose_newest,
    delete_chosen,
    hear_from,
    logged_in,
    member,
    open_picker,
    say_and_choose,
    wait_for_text,
)


async def test_the_owner_of_a_capitalised_room_deletes_a_members_message(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """ann made "Lobby": d on bob's message asks and deletes, as the server allows."""
    async with logged_in(server.url, config_dir, room="Lobby") as pilot:
        bob = await member(make_client, "Lobby")
        await hear_from(pilot, bob, "Lobby", "buy cheap pills")
        await choose_newest(pilot)
        await delete_chosen(pilot, "Delete bob's message “buy cheap pills”?", "bob")


async def test_a_deleted_message_cannot_be_reacted_to_or_copied(
    server: RunningServer, config_dir: Path
) -> None:
    """r and c on a tombstone say it was deleted; no picker, nothing on the clipboard."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_choose(pilot, "oops")
        await delete_chosen(pilot, "Delete your message “oops”?", "ann")
        await pilot.press("r")
        await wait_for_text(pilot, "That message was deleted.")
        assert not isinstance(pilot.app.screen, ReactPicker)
        pilot.app.screen.notice("")
        await pilot.press("c")
        await wait_for_text(pilot, "That message was deleted.")
        assert pilot.app.clipboard == ""


async def test_typing_in_the_reaction_picker_goes_to_the_free_entry(
    server: RunningServer, config_dir: Path
) -> None:
    """r, then ":tada:" typed straight away (no Tab to the field) and Enter: reacted.

    Typed at a person's pace, the field takes the focus after the first
    character; it must not then select that character for the next to replace.
    """
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_choose(pilot, "we shipped")
        await open_picker(pilot)
        await pilot.press(*":tada:", "enter")  # at a person's pace: the field's focus lands between
        await wait_for_text(pilot, ":tada: 1")


async def test_while_editing_the_footer_says_escape_cancels(
    server: RunningServer, config_dir: Path
) -> None:
    """Editing: "esc Cancel edit/reply" (not "esc Dashboard"); Escape cancels and stays."""
    async with logged_in(server.url, config_dir, room="lobby", size=(120, 24)) as pilot:
        await say_and_choose(pilot, "tea at noon")
        await pilot.press("e")
        shown = await wait_for_text(pilot, "Editing “tea at noon”", "esc Cancel edit/reply")
        assert "esc Dashboard" not in shown
        await pilot.press("escape")
        shown = await wait_for_text(pilot, "esc Dashboard", "Leave")
        assert "Editing" not in shown
