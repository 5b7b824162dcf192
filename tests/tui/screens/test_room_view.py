"""What the room screen shows as terminal and conversation change: resizes, header, outages."""

from __future__ import annotations

from pathlib import Path

from clubroom_tui.widgets.message_log import MessageLog
from tests.conftest import MakeServer, RunningServer
from tests.tui.conftest import (
    MakeClient,
    enter_room,
    log_in,
    make_app,
    screen_text,
    seed_room,
    type_into,
    wait_for,
    wait_for_text,
)


async def _in_busy_room(make_server: MakeServer, make_client: MakeClient) -> tuple[str, object]:
    server = await make_server(rate_limit=0, room_rate_limit=0)
    bob = await make_client("bob", url=server.url)
    await bob.create_room("busy")
    await seed_room(bob, "busy", 60)
    return server.url, bob


async def test_a_view_at_the_bottom_stays_there_through_resizes_and_news(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Shrinking to 60×15 and growing again keeps the newest message in view, and new ones show."""
    url, bob = await _in_busy_room(make_server, make_client)
    app = make_app(url, config_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, "ann", register=True)
        await enter_room(pilot, "busy", create=False)
        await wait_for_text(pilot, "old 000059")
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
    url, bob = await _in_busy_room(make_server, make_client)
    app = make_app(url, config_dir)
    async with app.run_test(size=(60, 15)) as pilot:
        await log_in(pilot, "ann", register=True)
        await enter_room(pilot, "busy", create=False)
        await wait_for_text(pilot, "old 000059")
        await pilot.press("pageup", "pageup")
        await wait_for(lambda: "old 000059" not in screen_text(app), "the view to scroll up")
        for n in range(3):
            await bob.send("busy", f"news {n}")
        await wait_for_text(pilot, "↓ 3 new messages below")
        await pilot.resize_terminal(80, 24)
        await wait_for_text(pilot, "↓ 3 new messages below")
        assert "news 2" not in screen_text(app)
        await pilot.press("ctrl+end")
        shown = await wait_for_text(pilot, "bob: news 2")
        assert "new messages below" not in shown
        assert app.screen.query_one(MessageLog).following


async def test_a_long_room_name_never_hides_the_connection_state(
    server: RunningServer, config_dir: Path
) -> None:
    """At 80 columns, a 64-character room name is shortened so "● connected" stays visible."""
    name = "n" * 64
    app = make_app(server.url, config_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, "ann", register=True)
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
    bob = await make_client("bob", url=server.url)
    await bob.create_room("den")
    app = make_app(server.url, config_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, "ann", register=True)
        await enter_room(pilot, "den", create=False)
        await wait_for_text(pilot, "● bob", "Members (2)")
        await server.stop()
        shown = await wait_for_text(pilot, "retrying in", "Last seen (2)", "? bob")
        assert "● bob" not in shown
        await server.start()
        await wait_for_text(pilot, "● connected", "Members (")
