"""The admin screen, driven like a user would, against a real server and real other clients.

The admin role is granted with the real operator command (``clubroom-server
users grant-admin``), before the administrator logs in, as an operator does.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from clubroom_tui.client import (
    ClubroomClient,
    ConnectionState,
    RequestFailed,
    RoomLost,
    SessionEnded,
)
from clubroom_tui.screens.admin import AdminScreen
from clubroom_tui.screens.confirm import Confirm
from clubroom_tui.screens.dashboard import DashboardScreen
from protocol import ErrorCode
from tests.admincli import admin_ok
from tests.conftest import RunningServer
from tests.tui.conftest import (
    PASSWORD,
    MakeClient,
    answer,
    enter_room,
    fast_client,
    logged_in,
    say,
    screen_text,
    type_into,
    wait_for,
    wait_for_text,
    wait_ready,
)
from tests.tui.test_contrast import THEMES, check_every_focus, unreadable_segments
from tests.tui.test_destructive import room_exists


async def grant_admin(server: RunningServer, username: str) -> None:
    await admin_ok("users", "grant-admin", username, "--db", str(server.settings.db))


async def revoke_admin(server: RunningServer, username: str) -> None:
    """Take the role back with the operator command, while the administrator is logged in."""
    await admin_ok("users", "revoke-admin", username, "--db", str(server.settings.db))


@asynccontextmanager
async def admin_app(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> AsyncIterator[Pilot[Any]]:
    """The real app, logged in as boss, who holds the admin role, on the dashboard."""
    await (await make_client("boss")).close()
    await grant_admin(server, "boss")
    async with logged_in(server.url, config_dir, "boss", register=False, size=(110, 40)) as pilot:
        yield pilot


async def open_admin(pilot: Pilot[Any], *rows: re.Pattern[str]) -> None:
    """F2 from the dashboard: wait for the admin screen, and for each of these rows on it."""
    await pilot.press("f2")
    await wait_for(lambda: isinstance(pilot.app.screen, AdminScreen), "the admin screen")
    for pattern in rows:
        await wait_for_row(pilot, pattern)


async def lobby_with_ann_and_bob(
    make_client: MakeClient,
) -> tuple[ClubroomClient, ClubroomClient]:
    """ann and bob are in "Lobby" (one message); ann also alone in "Quiet"."""
    ann, bob = await make_client("ann"), await make_client("bob")
    await ann.create_room("Lobby")
    await bob.join_room("Lobby")
    await ann.send("Lobby", "hello")
    await ann.create_room("Quiet")
    return ann, bob


def row(name: str, kind: str, members: int, messages: int) -> re.Pattern[str]:
    """A room's row on screen, however wide the columns are drawn."""
    return re.compile(rf"\b{re.escape(name)}\s+{kind}\s+{members}\s+{messages}\b")


async def asked(pilot: Pilot[Any], question: str, *, yes: bool) -> None:
    """The confirmation box shows exactly ``question`` (however wrapped); answer it."""
    await wait_for(lambda: isinstance(pilot.app.screen, Confirm), "a confirmation")
    await pilot.pause()
    boxed = [
        line[line.index("│") + 1 : line.rindex("│")]
        for line in screen_text(pilot.app).splitlines()
        if line.count("│") >= 2
    ]
    assert question in " ".join(" ".join(boxed).split()), boxed
    await answer(pilot, question[:25], yes=yes)


async def wait_for_row(pilot: Pilot[Any], pattern: re.Pattern[str]) -> None:
    await wait_for(lambda: pattern.search(screen_text(pilot.app)), f"a row {pattern.pattern}")


async def test_an_admin_sees_every_room_with_its_members_and_messages(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """F2 on the dashboard shows all rooms (not only boss's) with live counts; s re-sorts."""
    ann, _ = await lobby_with_ann_and_bob(make_client)
    await ann.create_room("Attic")
    async with admin_app(server, config_dir, make_client) as pilot:
        await wait_for_text(pilot, "f2 Admin")
        await open_admin(pilot, row("Lobby", "public", 2, 1), row("Quiet", "public", 1, 0))
        await wait_for_text(pilot, "3 rooms · sorted by name", "boss", "ann", "bob")
        assert rows_in_order(pilot) == ["Attic", "Lobby", "Quiet"]
        await pilot.press("s")  # the room table has the focus: most members first
        await wait_for_text(pilot, "sorted by members")
        assert rows_in_order(pilot) == ["Lobby", "Attic", "Quiet"]
        await pilot.press("s")
        await wait_for_text(pilot, "sorted by messages")
        assert rows_in_order(pilot)[0] == "Lobby"
        await pilot.press("escape")
        await wait_for(lambda: isinstance(pilot.app.screen, DashboardScreen), "the dashboard")


def rows_in_order(pilot: Pilot[Any]) -> list[str]:
    """The rooms as listed on screen, top to bottom."""
    shown = re.findall(r"^\s*(\w+)\s+public\b", screen_text(pilot.app), re.MULTILINE)
    return shown


async def test_deleting_a_room_after_yes_tells_its_members(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Delete asks with the room's messages and members; yes deletes it and bob hears at once."""
    ann, bob = await lobby_with_ann_and_bob(make_client)
    lost = bob.subscribe()
    async with admin_app(server, config_dir, make_client) as pilot:
        await open_admin(pilot, row("Lobby", "public", 2, 1))
        await pilot.press("delete")  # the first row (by name): Lobby
        await asked(
            pilot,
            "Delete room “Lobby” and its 1 message for everyone? "
            "Its 2 members will be removed from it. This cannot be undone.",
            yes=True,
        )
        await wait_for(lambda: "lobby" not in bob.rooms, "bob to lose the room")
        assert [e.room for e in lost.drain() if isinstance(e, RoomLost)] == ["Lobby"]
        await wait_for_text(pilot, "1 room · sorted by name")
        assert "Lobby" not in screen_text(pilot.app)
    assert not await room_exists(ann, "Lobby")


async def test_cancelling_a_deletion_deletes_nothing(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Cancel (or Escape) keeps the room, its members and its messages."""
    _, bob = await lobby_with_ann_and_bob(make_client)
    async with admin_app(server, config_dir, make_client) as pilot:
        await open_admin(pilot, row("Lobby", "public", 2, 1))
        await pilot.press("delete")
        await answer(pilot, "Delete room “Lobby”", yes=False)
        await wait_for_text(pilot, "Cancelled: nothing was changed.")
        await pilot.press("delete")
        await wait_for_text(pilot, "Delete room “Lobby”")
        await pilot.press("escape")
        await wait_for(lambda: not isinstance(pilot.app.screen, Confirm), "the question to close")
        await pilot.press("f5")
        await wait_for_row(pilot, row("Lobby", "public", 2, 1))
    assert "lobby" in bob.rooms
    joined = await bob.join_room("Lobby")
    assert [m.text for m in joined.messages] == ["hello"]


async def test_disabling_a_user_cuts_them_off_and_enabling_lets_them_back(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """bob is disabled after a yes (his connection ends, his login fails); e enables him."""
    _, bob = await lobby_with_ann_and_bob(make_client)
    ended = bob.subscribe()
    async with admin_app(server, config_dir, make_client) as pilot:
        await open_admin(pilot)
        await type_into(pilot, "#admin-user-query", "bo")
        await pilot.press("enter")
        await wait_for_text(pilot, "2 users found")  # boss and bob
        assert pilot.app.focused is pilot.app.screen.query_one("#admin-users")
        await pilot.press("delete")  # on the first row: bob (accounts are listed oldest first)
        await asked(
            pilot,
            "Disable the account “bob”? It is logged out on 1 device at once and cannot "
            "log in until an administrator enables it again; its messages stay.",
            yes=True,
        )
        await wait_for(
            lambda: any(isinstance(e, SessionEnded) for e in ended.drain()), "bob to be cut off"
        )
        await wait_for(lambda: re.search(r"bob\s+disabled", screen_text(pilot.app)), "disabled")
        await wait_for_row(pilot, row("Lobby", "public", 1, 1))  # bob left it, too
        again = fast_client(server.url)
        await again.start()
        await wait_ready(again)
        try:
            await again.login("bob", PASSWORD)
        except RequestFailed as exc:
            assert exc.code is ErrorCode.INVALID_CREDENTIALS
        else:
            raise AssertionError("a disabled account logged in")
        await pilot.press("e")
        await wait_for(lambda: re.search(r"bob\s+active", screen_text(pilot.app)), "enabled")
        assert (await again.login("bob", PASSWORD)).username == "bob"
        await again.close()


async def test_keys_go_to_the_focused_field_not_to_the_tables(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """s and Delete typed in the filter edit the filter; they neither sort nor delete."""
    await lobby_with_ann_and_bob(make_client)
    async with admin_app(server, config_dir, make_client) as pilot:
        await open_admin(pilot, row("Quiet", "public", 1, 0))
        field = pilot.app.screen.query_one("#admin-room-filter")
        field.focus()
        await pilot.press("q", "s", "left", "delete")
        assert field.value == "q"  # type: ignore[attr-defined]
        assert not isinstance(pilot.app.screen, Confirm)
        await wait_for_text(pilot, "2 rooms, 1 shown · sorted by name")
        assert "Lobby" not in screen_text(pilot.app)


async def test_a_revoked_role_shows_forbidden_without_crashing(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """The server re-checks the role: after revoke-admin, F5 and Delete say so clearly."""
    await lobby_with_ann_and_bob(make_client)
    async with admin_app(server, config_dir, make_client) as pilot:
        await open_admin(pilot, row("Lobby", "public", 2, 1))
        await revoke_admin(server, "boss")
        await pilot.press("f5")
        await wait_for_text(pilot, "Could not list the rooms: Only an administrator may do that.")
        await pilot.press("delete")
        await wait_for_text(pilot, "Could not delete “Lobby”: Only an administrator may do that.")
        assert isinstance(pilot.app.screen, AdminScreen)


async def test_a_non_admin_has_no_way_in_and_the_server_refuses_anyway(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """ann sees no Admin key, F2 and /admin do nothing admin-like; a crafted frame is forbidden."""
    async with logged_in(server.url, config_dir, size=(110, 40)) as pilot:
        assert "Admin" not in screen_text(pilot.app)
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(pilot.app.screen, DashboardScreen)
        assert not any(
            "Admin" in command.title for command in pilot.app.get_system_commands(pilot.app.screen)
        )
        await enter_room(pilot, "lobby", create=True)
        await say(pilot, "/admin")
        await wait_for_text(pilot, "Unknown command /admin")
        composer = pilot.app.screen.query_one("#composer")
        assert composer.value == "/admin"  # type: ignore[attr-defined]  # given back, as any typo
        composer.value = ""  # type: ignore[attr-defined]
        await say(pilot, "/help")
        await wait_for_text(pilot, "/quit")
        assert "/admin" not in screen_text(pilot.app).replace("Unknown command /admin", "")
        assert pilot.app.client.state is ConnectionState.CONNECTED
        try:
            await pilot.app.client.admin_rooms()
        except RequestFailed as exc:
            assert exc.code is ErrorCode.FORBIDDEN
        else:
            raise AssertionError("a non-admin listed the rooms")


async def test_slash_admin_opens_the_admin_screen_from_a_room(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """An administrator in a room types /admin; Escape then lands on the dashboard."""
    async with admin_app(server, config_dir, make_client) as pilot:
        await enter_room(pilot, "lobby", create=True)
        await say(pilot, "/admin")
        await wait_for(lambda: isinstance(pilot.app.screen, AdminScreen), "the admin screen")
        await wait_for_row(pilot, row("lobby", "public", 1, 0))
        await pilot.press("escape")
        await wait_for(lambda: isinstance(pilot.app.screen, DashboardScreen), "the dashboard")


@pytest.mark.parametrize("theme", THEMES)
async def test_the_admin_screen_is_readable(
    server: RunningServer, config_dir: Path, make_client: MakeClient, theme: str
) -> None:
    """Every character of the admin screen reaches WCAG AA, whichever widget has the focus."""
    await lobby_with_ann_and_bob(make_client)
    async with admin_app(server, config_dir, make_client) as pilot:
        pilot.app.theme = theme
        await open_admin(pilot, row("Lobby", "public", 2, 1))
        await wait_for_text(pilot, "3 users found")
        found = await check_every_focus(pilot, "admin")
        await revoke_admin(server, "boss")
        await pilot.press("f5")
        await wait_for_text(pilot, "Could not list the rooms")  # an error line, in red
        found += unreadable_segments(pilot, "admin, an error shown")
    assert found == [], "\n".join(dict.fromkeys(found))
