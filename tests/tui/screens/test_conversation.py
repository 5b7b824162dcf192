"""Conversation features in the real app against a real server: commands, typing, badges."""

from __future__ import annotations

from pathlib import Path

from clubroom_tui.app import ClubroomApp
from clubroom_tui.sessions import SessionStore
from clubroom_tui.widgets.composer import Composer
from protocol import TypingState
from tests.conftest import RunningServer
from tests.tui.conftest import (
    MakeClient,
    ann_and_bob_in_lobby,
    ann_in_lobby,
    enter_room,
    fast_client,
    log_in,
    logged_in,
    make_app,
    member,
    say,
    screen_text,
    two_clients_in_lobby,
    type_into,
    wait_for,
    wait_for_text,
)


async def test_unknown_command_hints_and_keeps_the_line(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """/frobnicate is not sent: a hint shows and the text stays in the box."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await say(pilot, "/frobnicate now")
        await wait_for_text(pilot, "Unknown command /frobnicate", "/help")
        assert pilot.app.screen.query_one(Composer).value == "/frobnicate now"
        assert [m.text for m in bob.rooms["lobby"].messages] == []


async def test_double_slash_sends_a_literal_slash_and_me_acts(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """//shrug sends "/shrug"; /me waves sends "* ann waves"."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await say(pilot, "//shrug")
        await say(pilot, "/me waves")
        await wait_for(lambda: len(bob.rooms["lobby"].messages) == 2, "both messages")
        assert [m.text for m in bob.rooms["lobby"].messages] == ["/shrug", "* ann waves"]


async def test_topic_command_sets_the_header_and_help_lists_commands(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """/topic sets the topic: the header shows it and the owner; /help lists every command."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await say(pilot, "/topic Tea at five")
        await wait_for_text(pilot, "# lobby — Tea at five (owner ann)")
        await wait_for(lambda: bob.rooms["lobby"].topic == "Tea at five", "bob to get the topic")
        await say(pilot, "/help")
        await wait_for_text(pilot, "/kick USER [REASON]", "/msg USER [TEXT]", "//text")


async def test_tab_completes_command_names_and_members(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """/to + Tab becomes "/topic "; @bo + Tab becomes "@bob "."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await member(make_client, "lobby")
        await wait_for_text(pilot, "Members (2)")
        composer = pilot.app.screen.query_one(Composer)
        await type_into(pilot, "#composer", "/to")
        await pilot.press("tab")
        assert composer.value == "/topic "
        composer.value = ""
        await type_into(pilot, "#composer", "hi @bo")
        await pilot.press("tab")
        assert composer.value == "hi @bob "


async def test_kick_command_and_member_list_marks_the_owner(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """The member list marks the owner; /kick bob removes him from the room."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await wait_for_text(pilot, "ann (you) ★", "Members (2)")
        await say(pilot, "/kick @bob too loud")
        await wait_for_text(pilot, "bob was removed from the room.", "Members (1)")
        await wait_for(lambda: "lobby" not in bob.rooms, "bob to lose the room")


async def test_typing_line_shows_who_types_and_the_app_sends_typing(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """bob typing shows "bob is typing…" under the log; ann's typing reaches bob."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await bob.typing("lobby", TypingState.ACTIVE)
        await wait_for_text(pilot, "bob is typing…", "bob ✎")
        await bob.send("lobby", "done typing")
        await wait_for(lambda: "bob is typing…" not in screen_text(pilot.app), "the line to go")
        await type_into(pilot, "#composer", "hello")
        await wait_for(lambda: bob.rooms["lobby"].typing == ("ann",), "bob to see ann typing")


async def test_badges_come_from_the_server_after_a_restart_of_the_app(
    server: RunningServer, config_dir: Path, make_client: MakeClient, tmp_path: Path
) -> None:
    """A fresh app shows the server's unread and mention counts for rooms it rejoins."""
    async with logged_in(server.url, config_dir, remember=True, room="lobby") as pilot:
        await pilot.press("escape")
    bob = await member(make_client, "lobby")
    await bob.send("lobby", "news one")
    await bob.send("lobby", "@ann news two")
    again = make_app(server.url, config_dir)
    async with again.run_test() as pilot:
        await wait_for_text(pilot, "Hello, ann!", "(2 unread)", "@ 1 mention")


async def test_a_mention_elsewhere_rings_notifies_and_f6_jumps_there(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """A mention in another room rings the bell, pops a notification, and F6 opens that room."""
    bob = await member(make_client, "garden", create=True)
    app = make_app(server.url, config_dir)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test() as pilot:
        await log_in(pilot, "ann", register=True)
        await enter_room(pilot, "garden", create=False)
        await pilot.press("escape")
        await enter_room(pilot, "lobby", create=True)
        await bob.send("garden", "@ann the roses!")
        await wait_for(lambda: bells == [1], "the bell")
        notes = [n.message for n in app._notifications]
        assert notes == ["bob mentioned you in garden (F6 jumps there)."], notes
        await pilot.press("f6")
        await wait_for_text(pilot, "# garden", "bob: @ann the roses!")


async def test_no_bell_keeps_the_notification_but_not_the_bell(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """With the bell turned off (--no-bell), a mention elsewhere still notifies, silently."""
    bob = await member(make_client, "garden", create=True)
    app = ClubroomApp(fast_client(server.url), SessionStore(config_dir), bell_on_mention=False)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test() as pilot:
        await log_in(pilot, "ann", register=True)
        await enter_room(pilot, "garden", create=False)
        await pilot.press("escape")
        await bob.send("garden", "@ann psst")
        await wait_for(lambda: len(app._notifications) == 1, "the notification")
        assert bells == []


def rows_after(shown: str, first: str, count: int) -> list[str]:
    """The screen row holding ``first`` and the ``count`` rows under it."""
    rows = shown.splitlines()
    start = next(n for n, row in enumerate(rows) if first in row)
    return rows[start : start + count + 1]


async def test_multi_line_messages_hang_under_their_text(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Second lines and wrapped lines start under the message text, not under the time."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await bob.send("lobby", "first line\nsecond line\n" + "word " * 40 + "END")
        shown = await wait_for_text(pilot, "bob: first line", "second line", "END")
        first, second, *wrapped = rows_after(shown, "bob: first line", 3)
        column = first.index("first line")
        assert second[:column].strip(" │▏▎▕") == "" and second[column:].startswith("second line")
        for row in wrapped:
            assert row[column:].startswith("word")
            assert row[:column].strip(" │▏▎▕") == ""


async def test_entering_a_room_shows_new_messages_at_the_read_marker(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """The server's read marker puts "new messages" between what ann read and what came since."""
    ann = await member(make_client, "lobby", "ann", create=True)
    seen = await ann.send("lobby", "seen before")
    await ann.mark_read("lobby", seen.id)
    bob = await member(make_client, "lobby")
    for text in ("unseen one", "unseen two"):
        await bob.send("lobby", text)
    async with logged_in(
        server.url, config_dir, register=False, room="lobby", create=False
    ) as pilot:
        shown = await wait_for_text(pilot, "seen before", "unseen two", "new messages")
        order = [shown.index(text) for text in ("seen before", "new messages", "unseen one")]
        assert order == sorted(order)
        assert shown.count("new messages") == 1


async def test_no_divider_when_everything_was_read(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """A room read to the end opens without a "new messages" line, even as messages arrive."""
    ann, bob = await two_clients_in_lobby(make_client)
    said = await bob.send("lobby", "old news")
    await ann.mark_read("lobby", said.id)
    async with logged_in(
        server.url, config_dir, register=False, room="lobby", create=False
    ) as pilot:
        await bob.send("lobby", "live news")
        shown = await wait_for_text(pilot, "old news", "live news")
        assert "new messages" not in shown
