"""The page itself: served whole by the web host, nothing from anywhere else, readable."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
from playwright.async_api import Page, Request

from tests.conftest import RunningServer
from tests.contrast import page_text_contrasts
from tests.web.conftest import StartWeb, open_clubroom, screenshot


async def test_page_loads_everything_from_the_web_host_itself(
    start_web: StartWeb, page: Page, server: RunningServer
) -> None:
    """Offline, the page still draws the login form in its font; every request stays home."""
    web = await start_web(server.url)
    requests: list[str] = []

    def record(request: Request) -> None:
        requests.append(request.url)

    page.on("request", record)
    page.on("websocket", lambda websocket: requests.append(websocket.url))
    errors: list[str] = []  # a request the Content-Security-Policy refused shows up here
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    screen = await open_clubroom(page, web.url)
    await screen.shows("Username")
    assert await page.evaluate("document.fonts.check('16px \"Roboto Mono\"')")
    assert await page.title() == "Clubroom"
    await screenshot(page, "web-login")

    origin = urlsplit(web.url).netloc
    assert requests, "the page made no request at all?"
    elsewhere = [url for url in requests if urlsplit(url).netloc != origin]
    assert elsewhere == []
    assert {urlsplit(url).scheme for url in requests} <= {"http", "ws"}
    assert errors == []


async def test_favicon_and_security_headers(start_web: StartWeb, server: RunningServer) -> None:
    """/favicon.ico is an icon, and the page forbids loading from other origins."""
    web = await start_web(server.url)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{web.url}/favicon.ico") as icon:
            assert icon.status == 200
            assert icon.headers["Content-Type"] == "image/vnd.microsoft.icon"
            assert (await icon.read()).startswith(b"\x00\x00\x01\x00")
        async with session.get(web.url) as index:
            assert index.status == 200
            policy = index.headers["Content-Security-Policy"]
            assert "default-src 'self'" in policy
            assert "font-src 'self'" in policy
            assert index.headers["Referrer-Policy"] == "no-referrer"
            assert "fonts.googleapis" not in await index.text()


async def test_page_text_is_readable(
    start_web: StartWeb, page: Page, server: RunningServer
) -> None:
    """The page's own words (before the terminal draws) meet WCAG AA on their background."""
    web = await start_web(server.url)
    await page.goto(f"{web.url}/?delay=1")  # holds the intro, with its Start button
    contrasts = await page_text_contrasts(page, ".intro p", "#start")
    await page.hover("#start")
    contrasts |= {
        f"{what} (hovered)": ratio
        for what, ratio in (await page_text_contrasts(page, "#start")).items()
    }
    assert len(contrasts) == 3, contrasts
    low = {what: ratio for what, ratio in contrasts.items() if ratio < 4.5}
    assert low == {}
