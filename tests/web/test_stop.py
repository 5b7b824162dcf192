"""Stopping ``clubroom web`` ends every open tab at once, and each tab says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, Page

from tests.conftest import RunningServer
from tests.contrast import AA_NORMAL_TEXT, page_text_contrasts
from tests.waiting import wait_until
from tests.web.conftest import (
    StartWeb,
    new_visitor,
    open_clubroom,
    register_in_browser,
    screenshot,
    type_and_see,
)
from tests.wsclient import user

STOPPED = "The Clubroom web client stopped."


async def test_stopping_the_web_host_tells_every_tab_at_once(
    start_web: StartWeb, browser: Browser, server: RunningServer
) -> None:
    """On SIGTERM each tab soon shows "stopped", the clients end, and the server sees them go."""
    web = await start_web(server.url)
    chatting = await new_visitor(browser)
    screen = await open_clubroom(chatting, web.url)
    await register_in_browser(chatting, screen, "stayer")
    await type_and_see(chatting, screen, "Porch")
    await chatting.keyboard.press("Enter")
    await screen.shows("Members (1)")
    waiting = await new_visitor(browser)
    await open_clubroom(waiting, web.url)  # a second tab, still on the login form
    clients = web.client_pids()
    assert clients, "no client process for the tabs?"

    wire = await user(server.url, "watcher")
    assert (await wire.ok("join_room", room="porch"))["members"] == ["stayer", "watcher"]
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    exit_status = await web.stop()
    assert exit_status == 0, web.log.read_text()
    await asyncio.gather(*(shows_stopped(tab) for tab in (chatting, waiting)))
    assert loop.time() - stopped_at < 10
    await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in clients), 10)

    for tab in (chatting, waiting):
        assert await tab.title() == f"Clubroom: {STOPPED}"
        contrasts = await page_text_contrasts(tab, "#ended-title", "#ended-detail", "#reload")
        assert len(contrasts) == 3
        assert min(contrasts.values()) >= AA_NORMAL_TEXT, contrasts
    await screenshot(chatting, "web-stopped")
    # the chat server saw the client go, as when a tab is closed: a drop, then the grace period
    left = await asyncio.wait_for(wire.event("member_left"), server.settings.grace + 5)
    assert left["username"] == "stayer"
    await wire.close()


async def shows_stopped(tab: Page) -> None:
    """Wait until the tab shows the "web client stopped" notice."""
    notice = tab.locator("#ended-title")
    await notice.wait_for(state="visible", timeout=10_000)
    assert await notice.text_content() == STOPPED
    assert await tab.evaluate("document.body.dataset.ended") == "stopped"
