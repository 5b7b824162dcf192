"""The growing composer and where a room opens, driven with Pilot against a real server.

What the user sees is asserted: the box's height on screen, the lines in it,
the message the other member receives, and which part of the log is in view.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from textual.keys import _character_to_key
from textual.pilot import Pilot

from clubroom_tui.client import ClubroomClient
from clubroom_tui.widgets.composer import MAX_LINES, Composer
from clubroom_tui.widgets.message_log import MessageLog
from protocol import Message
from tests.conftest import MakeServer, RunningServer
from tests.tui.conftest import (
    MakeClient,
    ann_and_bob_in_lobby,
    logged_in,
    paste,
    press_at_machine_speed,
    screen_text,
    seed_room,
    wait_for,
    wait_for_text,
)

BORDER = 2  # the box's top and bottom edges


def box_rows(composer: Composer) -> int:
    """How many text lines the box shows on screen now."""
    return composer.outer_size.height - BORDER


def newline() -> tuple[str, str]:
    return ("ctrl+j", "\n")


def typed(text: str) -> list[tuple[str, str]]:
    """The keys a terminal reports for these characters (`` `` is ``space``)."""
    return [(char if char.isalnum() else _character_to_key(char), char) for char in text]


def lines(*texts: str) -> list[tuple[str, str]]:
    """The keys that type these lines, with Ctrl+J between them."""
    keys: list[tuple[str, str]] = []
    for n, text in enumerate(texts):
        keys += [newline(), *typed(text)] if n else typed(text)
    return keys


async def test_the_box_grows_with_each_line_up_to_five_then_scrolls_and_shrinks_after_send(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """One line empty; one more per new line up to five; the newest line stays in view."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        composer = pilot.app.screen.query_one(Composer)
        assert box_rows(composer) == 1
        press_at_machine_speed(pilot.app, *lines("row 1", "row 2", "row 3"))
        await wait_for(lambda: composer.value == "row 1\nrow 2\nrow 3", "three lines")
        await wait_for(lambda: box_rows(composer) == 3, "the box to grow to three lines")
        shown = await wait_for_text(pilot, "row 1", "row 2", "row 3")
        rows = shown.splitlines()
        first = next(n for n, row in enumerate(rows) if "row 1" in row)
        assert "row 2" in rows[first + 1] and "row 3" in rows[first + 2]
        press_at_machine_speed(pilot.app, newline(), *lines(*(f"row {n}" for n in range(4, 8))))
        await wait_for(lambda: composer.value.endswith("row 7"), "seven lines")
        await wait_for(lambda: box_rows(composer) == MAX_LINES, "the box to stop at five")
        shown = await wait_for_text(pilot, "row 3", "row 7")  # the end of the draft is in view
        assert "row 1" not in shown and "row 2" not in shown
        await pilot.press("enter")
        await wait_for(lambda: bob.rooms["lobby"].messages, "the message")
        assert [m.text for m in bob.rooms["lobby"].messages] == [
            "\n".join(f"row {n}" for n in range(1, 8))
        ]
        await wait_for(lambda: box_rows(composer) == 1, "the box to shrink back to one line")
        assert composer.value == ""


async def test_a_pasted_paragraph_grows_the_box_and_arrives_as_one_message(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """A four-line bracketed paste: four lines in the box, one message with its newlines."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        composer = pilot.app.screen.query_one(Composer)
        paste(pilot.app, "dear all,\r\nthe plan:\n1. tea\n2. biscuits")
        await wait_for(lambda: box_rows(composer) == 4, "the box to grow to four lines")
        await wait_for_text(pilot, "dear all,", "the plan:", "1. tea", "2. biscuits")
        assert not bob.rooms["lobby"].messages  # a paste is a draft, never sent by itself
        await pilot.press("enter")
        await wait_for(lambda: bob.rooms["lobby"].messages, "the message")
        assert [m.text for m in bob.rooms["lobby"].messages] == [
            "dear all,\nthe plan:\n1. tea\n2. biscuits"
        ]
        # In the log the further lines hang under the text, not under the time.
        shown = await wait_for_text(pilot, "ann: dear all,")
        rows = shown.splitlines()
        first = next(n for n, row in enumerate(rows) if "ann: dear all," in row)
        column = rows[first].index("dear all,")
        assert rows[first + 1][column:].startswith("the plan:")
        assert rows[first + 1][:column].strip(" │") == ""


async def test_up_recalls_a_multi_line_message_whole_and_then_moves_between_its_lines(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Up in the empty box brings back all lines; in a box with text, Up is a line up."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        composer = pilot.app.screen.query_one(Composer)
        press_at_machine_speed(pilot.app, *lines("one", "two"), ("enter", "\r"))
        await wait_for(lambda: bob.rooms["lobby"].messages, "the message")
        press_at_machine_speed(pilot.app, ("up", None))
        await wait_for(lambda: composer.value == "one\ntwo", "the recalled message")
        await wait_for(lambda: box_rows(composer) == 2, "the box to show both lines")
        press_at_machine_speed(pilot.app, ("up", None), ("!", "!"), ("enter", "\r"))
        await wait_for(lambda: len(bob.rooms["lobby"].messages) == 2, "the second message")
        assert bob.rooms["lobby"].messages[-1].text == "one!\ntwo"


async def _room_with_unread(
    make_server: MakeServer, make_client: MakeClient, unread: int = 30
) -> tuple[RunningServer, ClubroomClient, Message]:
    """Room "busy": 31 messages ann read (on her other device, still connected), then more."""
    server = await make_server(rate_limit=0, room_rate_limit=0)
    ann, bob = await make_client("ann", url=server.url), await make_client("bob", url=server.url)
    await ann.create_room("busy")
    await bob.join_room("busy")
    await seed_room(bob, "busy", 30, prefix="read")
    last_read = await bob.send("busy", "the last one ann read")
    await ann.mark_read("busy", last_read.id)
    await seed_room(bob, "busy", unread, prefix="unread")
    await wait_for(
        lambda: len(ann.rooms["busy"].messages) >= 31 + unread, "ann's other device to hear"
    )
    return server, ann, last_read


def ann_back_in_busy(
    server: RunningServer, config_dir: Path
) -> AbstractAsyncContextManager[Pilot[Any]]:
    """The app, ann logged in again (80×24), entering "busy" as she left it elsewhere."""
    return logged_in(server.url, config_dir, register=False, room="busy", create=False)


async def test_a_room_with_unread_messages_opens_at_the_divider_and_is_read_at_the_bottom(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """The divider is in view on entry, the newest message is not, the room stays unread.

    Only once the reader has seen the bottom (ctrl+end) does the server's read
    marker move, as ann's other connection is told.
    """
    server, ann, last_read = await _room_with_unread(make_server, make_client)
    newest = ann.rooms["busy"].last_id
    async with ann_back_in_busy(server, config_dir) as pilot:
        shown = await wait_for_text(pilot, "── new messages ──", "the last one ann read")
        log = pilot.app.screen.query_one(MessageLog)
        top, bottom = log.content_region.y, log.content_region.bottom
        rows = shown.splitlines()
        divider = next(n for n, row in enumerate(rows) if "new messages" in row)
        assert top <= divider < bottom, "the divider is inside the log's visible rows"
        assert "bob: unread 000000" in rows[divider + 1]
        assert "unread 000029" not in shown, "the bottom is not in view yet"
        await pilot.pause()
        assert ann.rooms["busy"].read_up_to == last_read.id, "not read before it was seen"
        await pilot.press("ctrl+end")
        await wait_for_text(pilot, "bob: unread 000029")
        await wait_for(lambda: ann.rooms["busy"].read_up_to == newest, "the marker to move")
        assert "unread 000029" in screen_text(pilot.app)


async def test_sending_from_the_divider_takes_the_reader_to_the_bottom(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Who writes is in the conversation: their message and everything before it is in view."""
    server, ann, _ = await _room_with_unread(make_server, make_client)
    newest = ann.rooms["busy"].last_id
    async with ann_back_in_busy(server, config_dir) as pilot:
        await wait_for_text(pilot, "── new messages ──")
        press_at_machine_speed(pilot.app, *typed("catching up"), ("enter", "\r"))
        shown = await wait_for_text(pilot, "ann: catching up", "bob: unread 000029")
        assert "new messages below" not in shown
        await wait_for(lambda: (ann.rooms["busy"].read_up_to or 0) > (newest or 0), "read")


async def test_a_read_marker_older_than_the_first_page_still_opens_at_the_divider(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """80 unread (the room opens with 50): older ones load and the view follows the divider."""
    server, _, _ = await _room_with_unread(make_server, make_client, unread=80)
    async with ann_back_in_busy(server, config_dir) as pilot:
        shown = await wait_for_text(pilot, "the last one ann read", "── new messages ──")
        rows = shown.splitlines()
        divider = next(n for n, row in enumerate(rows) if "new messages" in row)
        assert "bob: unread 000000" in rows[divider + 1]
        assert shown.count("new messages") == 1
