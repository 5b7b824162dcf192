"""The whole app by keyboard alone, and quitting."""

from __future__ import annotations

from pathlib import Path

from clubroom_tui.client import ConnectionState
from tests.conftest import RunningServer
from tests.tui.conftest import make_app, wait_for_text


async def test_every_screen_works_with_the_keyboard_alone(
    server: RunningServer, config_dir: Path
) -> None:
    """Register, create a room, send, go back, reopen it and log out without a mouse."""
    app = make_app(server.url, config_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_text(pilot, "● connected")
        await pilot.press(*"ann", "enter", *"pw-1!xyz", "ctrl+r")
        await wait_for_text(pilot, "Hello, ann!")
        await pilot.press("ctrl+n", *"den", "enter")
        await wait_for_text(pilot, "# den", "Members (1)")
        await pilot.press(*"hi", "enter")
        await wait_for_text(pilot, "ann: hi")
        await pilot.press("escape")
        await wait_for_text(pilot, "Your rooms")
        await pilot.press("ctrl+r", "enter")
        await wait_for_text(pilot, "ann: hi", "Leave")
        await pilot.press("escape", "ctrl+o")
        await wait_for_text(pilot, "Log out? You are the last member of “den” and its 1")
        await pilot.press("tab", "enter")  # from Cancel (the focus) to "Log out and delete"
        await wait_for_text(pilot, "You have logged out.")


async def test_ctrl_q_quits_and_closes_the_connection(
    server: RunningServer, config_dir: Path
) -> None:
    """ctrl+q ends the app and closes its connection to the server."""
    app = make_app(server.url, config_dir)
    async with app.run_test() as pilot:
        await wait_for_text(pilot, "● connected")
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0
    assert app.client.state is ConnectionState.OFFLINE
    assert app.client.state_detail == "Closed."
