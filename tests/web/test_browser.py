"""``clubroom web`` end to end in a real headless Chromium, against a real server."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, WebSocket, async_playwright

from tests.conftest import RunningServer
from tests.wsclient import user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ANSI = re.compile(
    rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\x1b\][^\x07]*\x07"
)
PASSWORD = "browser-pass-1!"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TerminalScreen:
    """What the page's terminal was told to draw, read off its WebSocket.

    The terminal paints on a canvas, so its text is not in the DOM; the bytes
    the page receives to paint are what the user sees, escape codes aside.
    """

    def __init__(self) -> None:
        self.raw = bytearray()

    def attach(self, websocket: WebSocket) -> None:
        websocket.on("framereceived", self._on_frame)

    def _on_frame(self, payload: str | bytes) -> None:
        self.raw += payload if isinstance(payload, bytes) else payload.encode()

    @property
    def text(self) -> str:
        return ANSI.sub(b"", bytes(self.raw)).decode("utf-8", "replace")

    async def shows(self, needle: str, within: float = 20.0) -> None:
        """Wait until ``needle`` has been drawn since the last ``clear``."""
        async with asyncio.timeout(within):
            while needle not in self.text:  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0.1)

    def clear(self) -> None:
        self.raw.clear()


async def type_like_a_person(page: Page, *strokes: str) -> None:
    """Type text and press keys at a human pace (a focus change takes a moment)."""
    for stroke in strokes:
        if stroke in ("Tab", "Enter"):
            await page.keyboard.press(stroke)
            await asyncio.sleep(0.2)
        else:
            await page.keyboard.type(stroke, delay=15)


@pytest.fixture
def web_home(tmp_path: Path) -> Path:
    """The home directory of the ``clubroom web`` process: nothing may be saved there."""
    home = tmp_path / "web-home"
    home.mkdir()
    return home


@pytest.fixture
async def web_url(server: RunningServer, web_home: Path) -> AsyncIterator[str]:
    """``clubroom web`` running as a subprocess, pointed at the test server."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clubroom_tui",
        "web",
        "--port",
        str(port),
        "--server",
        server.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            **os.environ,
            "COLUMNS": "120",
            "HOME": str(web_home),
            "XDG_CONFIG_HOME": str(web_home / ".config"),
        },
    )
    url = f"http://127.0.0.1:{port}"
    async with asyncio.timeout(20):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
    yield url
    process.terminate()
    await process.wait()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> Page:
    """A page in its own browser context (a visitor of its own)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    return await context.new_page()


async def test_browser_chat_reaches_a_protocol_client_and_back(
    web_url: str, page: Page, server: RunningServer
) -> None:
    """Register, create a room and send in the browser; a wire client sees it and answers."""
    screen = TerminalScreen()
    page.on("websocket", screen.attach)
    await page.goto(web_url)
    await screen.shows("Welcome to Clubroom")
    await page.click("#terminal")
    await type_like_a_person(page, "webuser", "Tab", PASSWORD, "Tab", "Tab", "Enter")
    # password → log in → register: "Remember me" is off on the web
    await screen.shows("Hello, webuser")
    await type_like_a_person(page, "Web Room", "Enter")
    await screen.shows("Web Room")
    await type_like_a_person(page, "hello from the browser", "Enter")

    wire = await user(server.url, "wireuser")
    joined = await wire.ok("join_room", room="web room")
    texts = [m["text"] for m in joined["messages"]]
    while "hello from the browser" not in texts:
        texts.append((await wire.event("message"))["message"]["text"])
    assert joined["members"] == ["webuser", "wireuser"]

    screen.clear()
    await wire.ok("send", room="Web Room", text="hello from the wire")
    await screen.shows("hello from the wire")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "web-room.png")

    await page.context.close()  # the visitor closes the tab: a drop, then the grace period
    left = await asyncio.wait_for(wire.event("member_left"), server.settings.grace + 5)
    assert left["username"] == "webuser"
    await wire.close()


async def test_visitors_share_no_session(
    web_url: str, browser: Browser, web_home: Path, server: RunningServer
) -> None:
    """A second visitor gets the login screen, and no token is ever written to disk."""
    first = await browser.new_page()
    screen = TerminalScreen()
    first.on("websocket", screen.attach)
    await first.goto(web_url)
    await screen.shows("Welcome to Clubroom")
    assert "Remember me" not in screen.text
    await first.click("#terminal")
    await type_like_a_person(first, "visitor1", "Tab", PASSWORD, "Tab", "Tab", "Enter")
    await screen.shows("Hello, visitor1")

    second = await browser.new_page()
    other = TerminalScreen()
    second.on("websocket", other.attach)
    await second.goto(web_url)
    await other.shows("Welcome to Clubroom")
    await asyncio.sleep(1)
    assert "visitor1" not in other.text
    assert files_under(web_home) == []


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]
