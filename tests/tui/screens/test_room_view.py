"""What the room screen shows as terminal and conversation change: resizes, header, outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from clubroom_tui.client import ClubroomClient
from clubroom_tui.widgets.message_log import MessageLog
from tests.conftest import MakeServer, RunningServer
from tests.tui.conftest import (
    MakeClient,
    logged_in,
    member,
    screen_text,
    seed_room,
    type_into,
    wait_for,
    wait_for_text,
)


@asynccontextmanager
async def in_busy_room(
    make_server: MakeServer, make_client: MakeClient, config_dir: Path, size: tuple[int, int]
) -> AsyncIterator[tuple[Pilot[Any], ClubroomClient]]:
    """ann in "busy", which bob filled with 60 messages (no rate limits), the newest in view."""
    server = await make_server(rate_limit=0, room_rate_limit=0)
    bob = await member(make_client, "busy", create=True, url=server.url)
    await seed_room(bob, "busy", 60)
    async with logged_in(server.url, config_dir, room="busy", create=False, size=size) as pilot:
        await wait_for_text(pilot, "old 000059")
        yield pilot, bob


async def test_a_view_at_the_bottom_stays_there_through_resizes_and_news(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Shrinking to 60×15 and growing again keeps the newest message in view, and new ones show."""
    async with in_busy_room(make_server, make_client, config_dir, (80, 24)) as (pilot, bob):
        for size in ((60, 15), (200, 50), (60, 15)):
            await pilot.resize_terminal(*size)
            await wait_for_text(pilot, "old 000059")
        await bob.send("busy", "after the resize")
        await wait_for_text(pilot, "bob: after the resize")
        await pilot.resize_terminal(80, 24)
        await wait_for_text(pilot, "bob: after the resize")


async def test_a_view_scrolled_up_counts_news_below_and_jumps_down(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Scrolled up, new messages are counted below, not scrolled to; ctrl+end jumps to them."""
    async with in_busy_room(make_server, make_client, config_dir, (60, 15)) as (pilot, bob):
        await pilot.press("pageup", "pageup")
        await wait_for(lambda: "old 000059" not in screen_text(pilot.app), "the view to scroll up")
        for n in range(3):
            await bob.send("busy", f"news {n}")
        await wait_for_text(pilot, "↓ 3 new messages below")
        await pilot.resize_terminal(80, 24)
        await wait_for_text(pilot, "↓ 3 new messages below")
        assert "news 2" not in screen_text(pilot.app)
        await pilot.press("ctrl+end")
        shown = await wait_for_text(pilot, "bob: news 2")
        assert "new messages below" not in shown
        assert pilot.app.screen.query_one(MessageLog).following


async def test_a_long_room_name_never_hides_the_connection_state(
    server: RunningServer, config_dir: Path
) -> None:
    """At 80 columns, a 64-character room name is shortened so "● connected" stays visible."""
    name = "n" * 64
    async with logged_in(server.url, config_dir) as pilot:
        await type_into(pilot, "#create-name", name)
        await pilot.press("enter")
        shown = await wait_for_text(pilot, "Members (1)")
        header = shown.splitlines()[0]
        assert header.rstrip().endswith("ann · ● connected")
        assert "…" in header


async def test_offline_the_room_says_when_it_retries_and_shows_nobody_present(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """With the server gone the room screen says "retrying in" and no member is shown as online."""
    server = await make_server()
    await member(make_client, "den", create=True, url=server.url)
    async with logged_in(server.url, config_dir, room="den", create=False) as pilot:
        await wait_for_text(pilot, "● bob", "Members (2)")
        await server.stop()
        shown = await wait_for_text(pilot, "retrying in", "Last seen (2)", "? bob")
        assert "● bob" not in shown
        await server.start()
        await wait_for_text(pilot, "● connected", "Members (")
