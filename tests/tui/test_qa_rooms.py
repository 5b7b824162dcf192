"""Found by driving the client as a user: the dashboard's rooms and their unread counts.

- A room joined on another device (or before a login without "Remember me")
  was missing from "Your rooms": the dashboard said "You are in no rooms yet."
- Messages arriving while the reader sat in the room above the "new messages"
  divider (or scrolled up) were not counted: back on the dashboard the badge
  showed the count from before they came.
"""

from __future__ import annotations

from pathlib import Path

from clubroom_tui.widgets.message_log import MessageLog
from tests.conftest import RunningServer
from tests.tui.conftest import (
    PASSWORD,
    MakeClient,
    ann_and_bob_in_lobby,
    hear_from,
    log_in,
    logged_in,
    make_app,
    member,
    seed_room,
    wait_for,
    wait_for_text,
    wait_ready,
)


async def test_rooms_joined_on_another_device_are_listed_and_open(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """ann's phone is in "Den"; her fresh login on the laptop lists it, with its badge."""
    await member(make_client, "Den", "ann", create=True)  # ann's phone
    bob = await member(make_client, "Den")
    await bob.send("Den", "hi ann")
    async with logged_in(server.url, config_dir, register=False) as pilot:
        shown = await wait_for_text(pilot, "# Den  (1 unread)")
        assert "You are in no rooms yet" not in shown
        await pilot.press("ctrl+r", "enter")
        await wait_for_text(pilot, "bob: hi ann", "Leave")
        await hear_from(pilot, bob, "Den", "now you are here")


async def test_a_room_joined_elsewhere_meanwhile_shows_up_on_the_dashboard(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """While the laptop shows the dashboard, the phone joins a room: it appears, with its count."""
    app = make_app(server.url, config_dir)
    app.rooms_refresh_seconds = 0.2
    async with app.run_test() as pilot:
        await log_in(pilot, "ann", register=True)
        await wait_for_text(pilot, "You are in no rooms yet")
        phone = await make_client()
        await wait_ready(phone)
        await phone.login("ann", PASSWORD)
        bob = await member(make_client, "Attic", create=True)
        await phone.join_room("Attic")
        await bob.send("Attic", "up here")
        await wait_for_text(pilot, "# Attic  (1 unread)")


async def test_messages_arriving_above_the_divider_count_as_unread(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Opened at the divider, not at the bottom: what arrives meanwhile is still unread."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await pilot.press("escape")
        await seed_room(bob, "lobby", 40)
        await wait_for_text(pilot, "# lobby  (40 unread)")
        await pilot.press("ctrl+r", "enter")
        await wait_for_text(pilot, "── new messages ──", "old 000000")
        log = pilot.app.screen.query_one(MessageLog)
        assert not log.following, "the room should open at the divider, not at the bottom"
        await bob.send("lobby", "while you read the old ones")
        await wait_for(lambda: log.unseen == 1, "the log to count it below")
        await pilot.press("escape")
        await wait_for_text(pilot, "# lobby  (41 unread)")


async def test_a_mention_while_scrolled_up_in_the_room_is_counted(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Scrolled up in the room, a mention below is not seen: the dashboard counts it."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await seed_room(bob, "lobby", 40)
        await wait_for_text(pilot, "old 000039")
        await pilot.press("pageup", "pageup")
        log = pilot.app.screen.query_one(MessageLog)
        await wait_for(lambda: not log.following, "the log to be scrolled up")
        await bob.send("lobby", "@ann look")
        await wait_for(lambda: log.unseen == 1, "the log to count it below")
        await pilot.press("escape")
        await wait_for_text(pilot, "# lobby  (1 unread)  @ 1 mention")
