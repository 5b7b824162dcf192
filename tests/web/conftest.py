"""``clubroom web`` as a real subprocess, and a real headless Chromium to visit it.

Chromium is a Debian package (Playwright's own browser download is not
reachable everywhere): without it the browser tests skip and say how to get
it, unless CLUBROOM_REQUIRE_BROWSER=1 (as .ci/run sets), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, WebSocket, async_playwright

from tests.waiting import wait_until

ANSI = re.compile(
    rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\x1b\][^\x07]*\x07"
)
PASSWORD = "browser-pass-1!"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    # an offline machine: no name resolves, so any request to another host fails
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
HOW_TO_ENABLE = (
    "Chromium is not installed: `apt-get install chromium` (or set CLUBROOM_CHROMIUM "
    "to a Chromium binary) to run the browser tests"
)


def chromium_executable() -> str:
    """The Chromium to drive; skips (or fails, if the browser is required) when there is none."""
    candidate = os.environ.get("CLUBROOM_CHROMIUM") or shutil.which("chromium")
    if candidate and os.access(candidate, os.X_OK):
        return candidate
    if os.environ.get("CLUBROOM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CLUBROOM_REQUIRE_BROWSER=1 but {HOW_TO_ENABLE}")
    pytest.skip(HOW_TO_ENABLE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebHost:
    """A running ``clubroom web`` process."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_pids(self) -> list[int]:
        """The tab client processes it runs (children and their children)."""
        found: list[int] = []
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    children = (task / "children").read_text().split()
                except OSError:
                    continue
                found += map(int, children)
                pending += map(int, children)
        return found

    async def stop(self, how: str = "SIGTERM", within: float = 20.0) -> int:
        """Stop it as an operator would and wait for it to exit; its exit status.

        "SIGTERM" signals the process (a service manager); "Ctrl+C" sends
        SIGINT to its whole process group, as a terminal does; "SIGKILL"
        kills it outright (the OOM killer, `kill -9`).
        """
        if self.process.returncode is None:
            if how == "Ctrl+C":
                os.killpg(self.process.pid, signal.SIGINT)
            else:
                self.process.send_signal(getattr(signal, how))
        async with asyncio.timeout(within):
            return await self.process.wait()


StartWeb = Callable[..., Awaitable[WebHost]]


@pytest.fixture
def web_home(tmp_path: Path) -> Path:
    """The home directory of the ``clubroom web`` process: nothing may be saved there."""
    home = tmp_path / "web-home"
    home.mkdir()
    return home


@pytest.fixture
async def start_web(tmp_path: Path, web_home: Path) -> AsyncIterator[StartWeb]:
    """Start ``clubroom web`` subprocesses (pointed at a chat server); all stopped at the end."""
    hosts: list[WebHost] = []

    async def start(server_url: str, *options: str) -> WebHost:
        port = free_port()
        log = tmp_path / f"web-{len(hosts)}.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "clubroom_tui",
                "web",
                "--port",
                str(port),
                "--server",
                server_url,
                *options,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, as in an operator's terminal
                env={
                    **os.environ,
                    "COLUMNS": "120",
                    "HOME": str(web_home),
                    "XDG_CONFIG_HOME": str(web_home / ".config"),
                },
            )
        host = WebHost(process, port, log)
        hosts.append(host)
        await wait_until(lambda: accepts_connections(port) or process.returncode is not None, 20)
        assert process.returncode is None, log.read_text()
        return host

    yield start
    for host in hosts:
        await host.stop()


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_executable()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> Page:
    """A page in its own browser context (a visitor of its own)."""
    return await new_visitor(browser)


async def new_visitor(browser: Browser) -> Page:
    """A page in a browser context of its own: a visitor who shares nothing with others."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    return await context.new_page()


class TerminalScreen:
    """What the page's terminal was told to draw, read off its WebSocket.

    The terminal paints on a canvas, so its text is not in the DOM; the bytes
    the page receives to paint are what the user sees, escape codes aside.
    """

    def __init__(self, page: Page) -> None:
        self.raw = bytearray()
        page.on("websocket", self._attach)

    def _attach(self, websocket: WebSocket) -> None:
        websocket.on("framereceived", self._on_frame)

    def _on_frame(self, payload: str | bytes) -> None:
        self.raw += payload if isinstance(payload, bytes) else payload.encode()

    @property
    def text(self) -> str:
        return ANSI.sub(b"", bytes(self.raw)).decode("utf-8", "replace")

    async def shows(self, needle: str, within: float = 20.0) -> None:
        """Wait until ``needle`` has been drawn since the last ``clear``."""
        await wait_until(lambda: needle in self.text, within)

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


async def type_and_see(page: Page, screen: TerminalScreen, text: str) -> None:
    """Type ``text`` and wait until the terminal echoes it: the keyboard reaches a field.

    Waiting for the echo, not for a label that may be drawn before the
    screen takes the keyboard, is what makes the next key go where meant.
    """
    screen.clear()
    await page.keyboard.type(text, delay=15)
    await screen.shows(text)


async def open_clubroom(page: Page, url: str) -> TerminalScreen:
    """Visit the page, wait for the login form, and give the terminal the keyboard."""
    screen = TerminalScreen(page)
    await page.goto(url)
    await screen.shows("Welcome to Clubroom")
    await page.click("#terminal")
    return screen


async def register_in_browser(page: Page, screen: TerminalScreen, username: str) -> None:
    """Register from the login form; return once the dashboard has been drawn."""
    await type_and_see(page, screen, username)
    await type_like_a_person(page, "Tab", PASSWORD, "Tab", "Tab", "Enter")
    # password → log in → register: "Remember me" is off on the web
    await screen.shows(f"Hello, {username}")


async def screenshot(page: Page, name: str) -> Path:
    """Save what the visitor sees under test-artifacts/ (for people, and for failures)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=path)
    return path
