"""The dashboard against a real server: create, join, unread counts, log out, commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from clubroom_tui.client import RequestFailed
from clubroom_tui.sessions import SessionStore
from protocol import ErrorCode
from tests.conftest import RunningServer
from tests.tui.conftest import (
    MakeClient,
    ann_and_bob_in_lobby,
    ann_in_lobby,
    logged_in,
    member,
    to_dashboard,
    type_into,
    wait_for,
    wait_for_text,
)


async def test_create_room_opens_it(server: RunningServer, config_dir: Path) -> None:
    """Creating a room shows the room screen with the user as its only member."""
    async with ann_in_lobby(server.url, config_dir) as pilot:
        await wait_for_text(pilot, "Members (1)", "● ann (you)")


async def test_existing_room_name_is_explained_inline(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Creating a taken name says so and offers to join it; Enter then joins the existing room."""
    await member(make_client, "lobby", create=True)
    async with logged_in(server.url, config_dir) as pilot:
        await type_into(pilot, "#create-name", "LOBBY")
        await pilot.click("#create")
        shown = await wait_for_text(pilot, "“LOBBY” already exists. Press Enter to join it")
        assert "room_exists" not in shown
        await pilot.press("enter")
        await wait_for_text(pilot, "# lobby", "Members (2)")


async def test_unknown_room_is_explained_inline(server: RunningServer, config_dir: Path) -> None:
    """Joining a room that does not exist says so on the dashboard."""
    async with logged_in(server.url, config_dir) as pilot:
        await type_into(pilot, "#join-name", "nowhere")
        await pilot.press("enter")
        shown = await wait_for_text(pilot, "There is no room called 'nowhere'.")
        assert "no_such_room" not in shown


async def test_join_room_shows_its_history(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Joining an existing room shows the messages already in it."""
    bob = await member(make_client, "lobby", create=True)
    await bob.send("lobby", "welcome, whoever comes next")
    async with logged_in(server.url, config_dir, room="lobby", create=False) as pilot:
        await wait_for_text(pilot, "bob: welcome, whoever comes next", "Members (2)")


async def test_unread_count_grows_while_away_and_clears(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Messages arriving while the dashboard is shown count as unread until the room opens."""
    async with ann_and_bob_in_lobby(server.url, config_dir, make_client) as (pilot, bob):
        await to_dashboard(pilot, "# lobby")
        await bob.send("lobby", "one")
        await bob.send("lobby", "two")
        await wait_for_text(pilot, "# lobby  (2 unread)")
        await pilot.press("ctrl+r", "enter")
        await wait_for_text(pilot, "bob: two", "Leave")
        shown = await to_dashboard(pilot)
        assert "unread" not in shown


async def test_log_out_forgets_and_revokes_the_token(
    server: RunningServer, config_dir: Path, make_client: MakeClient
) -> None:
    """Log out returns to the login screen, deletes the stored token and revokes it."""
    async with logged_in(server.url, config_dir, remember=True) as pilot:
        token = pilot.app.client.token
        assert token and SessionStore(config_dir).load(server.url) is not None
        await pilot.click("#logout")
        await wait_for_text(pilot, "You have logged out.", "Welcome to Clubroom")
    assert SessionStore(config_dir).load(server.url) is None
    other = await make_client()
    await wait_for(lambda: other.ready, "a second connection")
    with pytest.raises(RequestFailed) as failure:
        await other.resume(token)
    assert failure.value.code is ErrorCode.INVALID_TOKEN


async def test_command_palette_opens_a_room(server: RunningServer, config_dir: Path) -> None:
    """The command palette lists the user's rooms and opens the one chosen."""
    async with logged_in(server.url, config_dir, room="lobby", size=(100, 30)) as pilot:
        await to_dashboard(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"lobby")
        await wait_for_text(pilot, "Show this room")
        await pilot.press("enter")
        await wait_for_text(pilot, "Leave", "Members (1)")


async def test_a_leading_hash_is_dropped_and_errors_clear_on_success(
    server: RunningServer, config_dir: Path
) -> None:
    """``#general`` creates "general"; the error from a failed try is gone once one succeeds."""
    async with logged_in(server.url, config_dir, size=(100, 30)) as pilot:
        await type_into(pilot, "#join-name", "nowhere")
        await pilot.press("enter")
        await wait_for_text(pilot, "There is no room called 'nowhere'.")
        await type_into(pilot, "#create-name", "#general")
        await pilot.press("enter")
        await wait_for_text(pilot, "Clubroom · # general", "Members (1)")
        shown = await to_dashboard(pilot, "# general")
        assert "There is no room called" not in shown


async def test_a_name_over_64_characters_is_refused_with_its_length_not_cut(
    server: RunningServer, config_dir: Path
) -> None:
    """A 70-character name stays whole in the field and the error says to remove 6."""
    name = "r" * 70
    async with logged_in(server.url, config_dir, size=(100, 30)) as pilot:
        await type_into(pilot, "#create-name", name)
        await pilot.press("enter")
        await wait_for_text(pilot, "That name is 70 characters; room names are at most 64.")
        assert pilot.app.screen.query_one("#create-name", Input).value == name
        assert not pilot.app.client.rooms
