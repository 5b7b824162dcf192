"""The room screen against a real server: sending, members, leaving, outages, safety."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from clubroom_tui.client import Backoff, RequestFailed
from clubroom_tui.widgets.composer import Composer
from clubroom_tui.widgets.message_log import day_label
from protocol import ErrorCode
from tests.admincli import admin_ok
from tests.conftest import MakeServer, RunningServer
from tests.tui.conftest import (
    MakeClient,
    ann_and_bob_in_lobby,
    ann_in_lobby,
    answer,
    hear_from,
    logged_in,
    member,
    say,
    say_and_see,
    screen_text,
    to_dashboard,
    wait_connected,
    wait_for,
    wait_for_text,
)


async def test_sent_message_reaches_a_later_joiner_and_live(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """What ann types is in the history bob gets on joining, and her next one reaches him live."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_see(pilot, "first!")
        bob = await make_client("bob")
        joined = await bob.join_room("lobby")
        assert [(m.author, m.text) for m in joined.messages] == [("ann", "first!")]
        await wait_for_text(pilot, "Members (2)", "→ bob joined the room")
        await say(pilot, "hello bob")
        await wait_for(lambda: len(bob.rooms["lobby"].messages) == 2, "the live message")
        assert bob.rooms["lobby"].messages[-1].text == "hello bob"
        await hear_from(pilot, bob, "lobby", "hi ann")


async def test_messages_show_time_author_and_day(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Each line shows local HH:MM and the author; a separator names the day."""
    bob = await member(make_client, "lobby", create=True)
    message = await bob.send("lobby", "what time is it")
    local = datetime.fromisoformat(message.at.replace("Z", "+00:00")).astimezone()
    async with logged_in(server.url, config_dir, room="lobby", create=False) as pilot:
        await wait_for_text(
            pilot, f"{local:%H:%M} bob: what time is it", f"── {day_label(local.date())} ──"
        )


async def test_own_messages_are_styled_apart(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """The user's own lines are drawn in a different style from other people's."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await bob.send("lobby", "theirs")
        await say(pilot, "mine")
        await wait_for_text(pilot, "bob: theirs", "ann: mine")
        styles = {}
        for strip in pilot.app.screen._compositor.render_strips():
            for segment in strip:
                for word in ("theirs", "mine"):
                    if word in segment.text:
                        styles[word] = segment.style
        assert styles["mine"] != styles["theirs"]


async def test_leave_notice_and_member_list(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """When another member leaves, a notice appears and the member list shrinks."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await wait_for_text(pilot, "Members (2)", "● bob")
        await bob.leave_room("lobby")
        shown = await wait_for_text(pilot, "← bob left the room", "Members (1)")
        assert "● bob" not in shown


async def test_notices_survive_going_back_to_the_dashboard(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Join notices that happened while the room was not shown appear when it opens again."""
    bob = await make_client("bob")
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await to_dashboard(pilot)
        await bob.join_room("lobby")
        await bob.send("lobby", "knock knock")
        await wait_for_text(pilot, "(1 unread)")
        await pilot.press("ctrl+r", "enter")
        shown = await wait_for_text(pilot, "→ bob joined the room", "bob: knock knock")
        assert shown.index("bob joined") < shown.index("knock knock")


async def test_messages_arriving_under_the_command_palette_are_kept(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """A message that arrives while the command palette is open is in the log once it closes."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await pilot.press("ctrl+p")
        await wait_for_text(pilot, "Search for commands")
        await bob.send("lobby", "psst")
        await wait_for(lambda: pilot.app.client.rooms["lobby"].messages, "the message to arrive")
        await pilot.press("escape")
        await wait_for_text(pilot, "bob: psst")


async def test_leaving_as_last_member_deletes_the_room(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Leave, confirmed, returns to the dashboard and deletes the room the user was alone in."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_see(pilot, "anyone?")
        await pilot.click("#leave")
        await answer(pilot, "“lobby” and its 1 message", yes=True)
        shown = await wait_for_text(pilot, "Your rooms", "You are in no rooms yet.")
        assert "# lobby" not in shown
    bob = await make_client("bob")
    with pytest.raises(RequestFailed) as failure:
        await bob.join_room("lobby")
    assert failure.value.code is ErrorCode.NO_SUCH_ROOM


async def test_escape_goes_back_without_leaving(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Escape shows the dashboard while the user stays a member of the room."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await to_dashboard(pilot, "# lobby")
        await bob.send("lobby", "still there?")
        await wait_for_text(pilot, "(1 unread)")
        assert bob.rooms["lobby"].members == ("ann", "bob")


async def test_other_peoples_markup_is_shown_literally(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Rich markup and links from another user appear character for character."""
    async with logged_in(server.url, config_dir, room="lobby", size=(120, 30)) as pilot:
        bob = await member(make_client, "lobby")
        markup = "[bold red]boom[/] [link=https://evil.example]click[/link]"
        shown = await hear_from(pilot, bob, "lobby", markup)
        assert "bob: boom" not in shown


async def test_queued_message_survives_an_outage(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Typed while the server is down, a message is sent once after the automatic reconnect."""
    slow_retry = Backoff(initial=1.2, maximum=1.2)
    async with logged_in(
        server.url, config_dir, room="lobby", size=(100, 30), backoff=slow_retry
    ) as pilot:
        bob = await member(make_client, "lobby")
        await server.stop()
        await wait_for_text(pilot, "○ offline")
        await say(pilot, "typed in the dark")
        await wait_for_text(pilot, "typed in the dark  (queued until the connection is back)")
        await server.start()
        await wait_connected(bob)
        await bob.send("lobby", "sent while you were away")
        shown = await wait_for_text(
            pilot, "● connected", "bob: sent while you were away", "ann: typed in the dark"
        )
        assert shown.count("typed in the dark") == 1
        assert "queued" not in shown
    texts = [m.text for m in bob.rooms["lobby"].messages]
    assert texts.count("typed in the dark") == 1
    stored = await bob.history("lobby", before=bob.rooms["lobby"].messages[-1].id + 1)
    assert [m.text for m in stored.messages].count("typed in the dark") == 1


async def test_failed_send_puts_the_text_back(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """A message that can no longer be sent (room gone after the outage) returns to the box."""
    server = await make_server()
    slow_retry = Backoff(initial=1.6, maximum=1.6)
    async with logged_in(
        server.url, config_dir, room="lobby", size=(100, 30), backoff=slow_retry
    ) as pilot:
        await server.stop()
        await wait_for_text(pilot, "○ offline")
        await say(pilot, "do not lose me")
        # The operator deletes the room while the server is down (no race with a grace period).
        await admin_ok("rooms", "delete", "lobby", "--yes", "--db", str(server.settings.db))
        await server.start()
        shown = await wait_for_text(pilot, "● connected", "no room called 'lobby'")
        assert pilot.app.screen.query_one(Composer).value == "do not lose me"
        assert "queued" not in shown


async def test_rate_limit_says_slow_down_and_sends_later(
    make_server: MakeServer, config_dir: Path
) -> None:
    """Sending too fast shows "slow down" and every message still arrives once, in order."""
    server = await make_server(rate_limit=0.4, rate_burst=1)  # 2.5 s apart: slow down shows
    async with logged_in(server.url, config_dir, room="lobby", size=(100, 30)) as pilot:
        await say(pilot, "fast 0")
        await say(pilot, "fast 1")
        await wait_for_text(pilot, "Slow down: your message goes out in", "(slow down")
        shown = await wait_for_text(pilot, "ann: fast 0", "ann: fast 1")
        assert shown.index("fast 0") < shown.index("fast 1")
        assert shown.count("fast 1") == 1


async def test_scrolling_to_the_top_loads_older_messages(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Scrolling up past the first 50 messages fetches older ones with history."""
    server = await make_server(rate_limit=0, room_rate_limit=0)
    bob = await member(make_client, "lobby", create=True, url=server.url)
    for n in range(1, 81):
        await bob.send("lobby", f"message {n:03d}")
    async with logged_in(server.url, config_dir, room="lobby", create=False) as pilot:
        await wait_for_text(pilot, "message 080")
        assert "message 030" not in screen_text(pilot.app)
        await pilot.click("#log")
        for _ in range(6):
            await pilot.press("home")
            await pilot.pause(0.05)
            if "message 001" in screen_text(pilot.app):
                break
        await wait_for_text(pilot, "message 001")


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_room_screen_fits_small_and_large_terminals(
    server: RunningServer, config_dir: Path, size: tuple[int, int]
) -> None:
    """At 80×24 and 200×50 the room shows its header, log, members, box, and keys."""
    async with logged_in(server.url, config_dir, room="lobby", size=size) as pilot:
        await say(pilot, "fits")
        await wait_for_text(
            pilot,
            "Clubroom · # lobby",
            "● connected",
            "ann: fits",
            "Members (1)",
            "Leave",
            "esc Dashboard",
            "^t Members",
        )
