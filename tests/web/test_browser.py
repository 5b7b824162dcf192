"""``clubroom web`` end to end in a real headless Chromium, against a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, Page

from tests.conftest import RunningServer
from tests.web.conftest import (
    StartWeb,
    new_visitor,
    open_clubroom,
    register_in_browser,
    screenshot,
    type_and_see,
    type_like_a_person,
)
from tests.wsclient import user


async def test_browser_chat_reaches_a_protocol_client_and_back(
    start_web: StartWeb, page: Page, server: RunningServer
) -> None:
    """Register, create a room and send in the browser; a wire client sees it and answers."""
    web = await start_web(server.url)
    screen = await open_clubroom(page, web.url)
    await register_in_browser(page, screen, "webuser")
    await type_and_see(page, screen, "Web Room")
    await page.keyboard.press("Enter")
    # the member list is only on the room screen; then the composer must echo
    await screen.shows("Members (1)")
    await type_and_see(page, screen, "hello from the browser")
    await page.keyboard.press("Enter")

    wire = await user(server.url, "wireuser")
    joined = await wire.ok("join_room", room="web room")
    texts = [m["text"] for m in joined["messages"]]
    while "hello from the browser" not in texts:
        texts.append((await wire.event("message"))["message"]["text"])
    assert joined["members"] == ["webuser", "wireuser"]

    screen.clear()
    await wire.ok("send", room="Web Room", text="hello from the wire")
    await screen.shows("hello from the wire")
    await screenshot(page, "web-room")

    await page.context.close()  # the visitor closes the tab: a drop, then the grace period
    left = await asyncio.wait_for(wire.event("member_left"), server.settings.grace + 5)
    assert left["username"] == "webuser"
    await wire.close()


async def test_visitors_share_no_session(
    start_web: StartWeb, browser: Browser, web_home: Path, server: RunningServer
) -> None:
    """A second visitor gets the login screen, and no token is ever written to disk."""
    web = await start_web(server.url)
    first = await new_visitor(browser)
    screen = await open_clubroom(first, web.url)
    assert "Remember me" not in screen.text
    await register_in_browser(first, screen, "visitor1")

    second = await new_visitor(browser)
    other = await open_clubroom(second, web.url)
    await type_like_a_person(second, "Tab")  # the login form is live, and still empty
    await other.shows("Welcome to Clubroom")
    assert "visitor1" not in other.text
    assert files_under(web_home) == []


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]
