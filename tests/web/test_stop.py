"""Stopping ``clubroom web`` ends every open tab at once, and each tab says so."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest
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
LOST = "The connection to the Clubroom web client was lost."


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl+C"])
async def test_stopping_the_web_host_tells_every_tab_at_once(
    start_web: StartWeb, browser: Browser, server: RunningServer, how: str
) -> None:
    """Stopped, each tab soon shows "stopped", the clients end, and the server sees them go."""
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
    stopping = asyncio.create_task(web.stop(how))
    await asyncio.gather(*(shows_stopped(tab) for tab in (chatting, waiting)))
    assert await stopping == 0, web.log.read_text()
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


async def test_a_tab_whose_client_dies_says_so(
    start_web: StartWeb, page: Page, server: RunningServer
) -> None:
    """A client killed behind a tab leaves no live-looking tab: it says the connection was lost."""
    web = await start_web(server.url)
    await open_clubroom(page, web.url)
    for pid in web.client_pids():
        os.kill(pid, signal.SIGKILL)
    await shows_ending(page, LOST)
    assert await page.evaluate("document.body.dataset.ended") == "lost"


async def shows_stopped(tab: Page) -> None:
    """Wait (a few seconds at most: no frozen tab) for the "web client stopped" notice."""
    await shows_ending(tab, STOPPED)
    assert await tab.evaluate("document.body.dataset.ended") == "stopped"


async def shows_ending(tab: Page, title: str) -> None:
    notice = tab.locator("#ended-title")
    await notice.wait_for(state="visible", timeout=8_000)
    assert await notice.text_content() == title


async def test_a_killed_web_host_leaves_no_client_behind(
    start_web: StartWeb, server: RunningServer
) -> None:
    """kill -9 of the web host: each tab's client ends by itself within seconds."""
    web = await start_web(server.url)
    async with aiohttp.ClientSession() as session:
        tab = await session.ws_connect(f"{web.url}/ws?width=80&height=24")
        await wait_until(lambda: len(web.client_pids()) == 1, 20)
        clients = web.client_pids()
        await web.stop("SIGKILL")
        await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in clients), 10)
        await tab.close()
