"""The admin screen in the browser: the same app, so the same keys and the same question."""

from __future__ import annotations

from playwright.async_api import Page

from tests.admincli import admin_ok
from tests.conftest import RunningServer
from tests.web.conftest import (
    StartWeb,
    open_clubroom,
    screenshot,
    type_and_see,
    type_like_a_person,
)
from tests.wsclient import PASSWORD, in_room, user


async def test_an_admin_deletes_a_room_from_the_browser(
    start_web: StartWeb, page: Page, server: RunningServer
) -> None:
    """boss logs in on the web page, F2, Delete, Tab to the named button, Enter: bob hears."""
    ann, bob = await user(server.url, "ann"), await user(server.url, "bob")
    await in_room([ann, bob], "Lobby")
    await (await user(server.url, "boss")).close()
    await admin_ok("users", "grant-admin", "boss", "--db", str(server.settings.db))
    web = await start_web(server.url)
    screen = await open_clubroom(page, web.url)
    await type_and_see(page, screen, "boss")
    await type_like_a_person(page, "Tab", PASSWORD, "Enter")
    await screen.shows("Hello, boss")
    screen.clear()
    await page.keyboard.press("F2")
    await screen.shows("sorted by name")
    await page.keyboard.press("Delete")
    await screen.shows("Delete room “Lobby” and its 0 messages for everyone?")
    await screenshot(page, "web-admin-confirm")
    await type_like_a_person(page, "Tab", "Enter")
    assert await bob.unmatched() == {"type": "room_deleted", "room": "Lobby"}
    for client in (ann, bob):
        await client.close()
