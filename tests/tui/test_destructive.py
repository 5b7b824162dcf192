"""Nothing is destroyed without a yes to a sentence that says what goes; cancelling keeps all."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clubroom_tui.client import ClubroomClient, ConnectionState, RequestFailed
from clubroom_tui.screens.confirm import Confirm
from clubroom_tui.screens.room import RoomScreen
from protocol import ErrorCode
from tests.conftest import MakeServer, RunningServer
from tests.tui.conftest import (
    TIMEOUT,
    MakeClient,
    ann_and_bob_in_lobby,
    ann_in_lobby,
    answer,
    log_in,
    make_app,
    quit_app,
    say_and_see,
    to_dashboard,
    wait_for,
    wait_for_text,
)


async def room_exists(client: ClubroomClient, room: str) -> bool:
    """Ask the server (by joining, then leaving again) whether the room is still there."""
    try:
        await client.join_room(room)
    except RequestFailed as exc:
        assert exc.code is ErrorCode.NO_SUCH_ROOM
        return False
    await client.leave_room(room)
    return True


async def test_cancelling_leave_as_last_member_keeps_room_and_messages(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Leave asks, naming the room and its 2 messages; Cancel keeps ann in it, nothing deleted."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await say_and_see(pilot, "one", "two")
        await pilot.click("#leave")
        shown = await answer(pilot, "Leave “lobby” and its 2 messages?", yes=False)
        assert "deleted for good" in shown
        assert isinstance(pilot.app.screen, RoomScreen)
        await say_and_see(pilot, "still here")
        bob = await make_client("bob")
        joined = await bob.join_room("lobby")
        assert [m.text for m in joined.messages] == ["one", "two", "still here"]


async def test_leaving_a_shared_room_asks_without_talk_of_deletion(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """With others in the room, Leave asks first, says it can be re-joined, deletes nothing."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await wait_for_text(pilot, "Members (2)")
        await pilot.click("#leave")
        shown = await answer(pilot, "You can join it again later.", yes=True)
        assert "deleted" not in shown
        await wait_for_text(pilot, "Your rooms")
        await wait_for(lambda: bob.rooms["lobby"].members == ("bob",), "ann to be gone")


async def test_ctrl_l_redraws_and_tab_cannot_reach_leave(
    server: RunningServer, config_dir: Path
) -> None:
    """ctrl+l (a terminal's redraw) and any number of tabs leave the user in the room, unasked."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await pilot.press("ctrl+l", "tab", "tab", "tab", "enter", "shift+tab", "enter")
        await pilot.pause()
        assert isinstance(pilot.app.screen, RoomScreen)
        assert "lobby" in pilot.app.client.rooms


async def test_cancelling_log_out_keeps_the_rooms_it_would_delete(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """ctrl+o names the room it would delete; Cancel keeps the session and the room."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await to_dashboard(pilot)
        await pilot.press("ctrl+o")
        shown = await answer(pilot, "Log out? You are the last member of “lobby”", yes=False)
        assert "deletes it for good" in shown.replace("\n", " ")
        await wait_for_text(pilot, "Hello, ann!")
        assert pilot.app.client.token is not None
        bob = await make_client("bob")
        assert await room_exists(bob, "lobby")


async def test_cancelling_quit_keeps_running_and_says_what_the_grace_period_would_cost(
    server: RunningServer, config_dir: Path
) -> None:
    """ctrl+q alone in a room names it and the grace period; Cancel keeps the app connected."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await pilot.press("ctrl+q")
        shown = await answer(pilot, "Quit? You are the last member of “lobby”", yes=False)
        assert "grace" in shown
        assert pilot.app.return_code is None
        assert pilot.app.client.state is ConnectionState.CONNECTED
        assert not isinstance(pilot.app.screen, Confirm)


async def test_after_a_restart_the_client_says_which_rooms_were_deleted_and_why(
    make_server: MakeServer, config_dir: Path, make_client: MakeClient
) -> None:
    """A remembered room deleted while the client was away is named on the dashboard, with why."""
    server = await make_server(grace=0.2, rate_limit=0, room_rate_limit=0)
    first = make_app(server.url, config_dir)
    async with first.run_test() as pilot:
        await log_in(pilot, "ann", register=True, remember=True)
        await pilot.press("ctrl+n", *"den", "enter")
        await wait_for_text(pilot, "# den", "Members (1)")
        await quit_app(pilot)
    bob = await make_client("bob", url=server.url)
    await wait_for_gone(bob, "den")
    second = make_app(server.url, config_dir)
    async with second.run_test(size=(100, 30)) as pilot:
        await wait_for_text(pilot, "Hello, ann!", "While you were away, “den” was deleted")
        await wait_for_text(pilot, "stays away longer than the server's grace period")


async def wait_for_gone(client: ClubroomClient, room: str) -> None:
    """Poll the server until the room no longer exists (the grace period ran out)."""
    async with asyncio.timeout(TIMEOUT):
        while await room_exists(client, room):  # noqa: ASYNC110 (no server event to await)
            await asyncio.sleep(0.05)
