"""Fixtures for client tests: our protocol client and the real app, against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.app import App
from textual.keys import _character_to_key
from textual.pilot import Pilot

from clubroom_tui.app import ClubroomApp
from clubroom_tui.client import Backoff, ClubroomClient, ConnectionState, MessagesAdded
from clubroom_tui.screens.confirm import Confirm
from clubroom_tui.sessions import SessionStore
from tests.conftest import RunningServer

PASSWORD = "correct-horse-1!"
FAST_BACKOFF = Backoff(initial=0.05, maximum=0.25)
# Deadlines for waiting on a state, never waits themselves: generous, because
# the suite runs four workers on two cores and argon2 (even the cheapest
# profile) runs at SCHED_IDLE, after everything else on a busy machine.
TIMEOUT = 10.0

MakeClient = Callable[..., Awaitable[ClubroomClient]]


def fast_client(url: str, **options: Any) -> ClubroomClient:
    """A client that retries quickly; tests of the request timeout itself pass a short one."""
    options.setdefault("backoff", FAST_BACKOFF)
    options.setdefault("request_timeout", 8.0)
    options.setdefault("connect_timeout", 2.0)
    return ClubroomClient(url, **options)


@pytest.fixture
async def make_client(server: RunningServer) -> AsyncIterator[MakeClient]:
    """Started clients (registered as ``username`` if given), closed when the test ends."""
    clients: list[ClubroomClient] = []

    async def make(
        username: str | None = None, url: str | None = None, **options: Any
    ) -> ClubroomClient:
        client = fast_client(url or server.url, **options)
        clients.append(client)
        await client.start()
        if username:
            await wait_ready(client)
            await client.register(username, PASSWORD)
        return client

    yield make
    for client in clients:
        await client.close()


class FaultyLink:
    """A TCP relay in front of the real server that can lose replies and cut connections.

    It injects network faults; everything behind it is the real server.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.losing_replies = False
        self.refusing = False
        self.port = 0
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every relayed connection at once, as a broken network would."""
        links, self._links = self._links, []
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._links.append((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer, replies=False),
            self._pipe(up_reader, writer, replies=True),
            return_exceptions=True,
        )
        writer.transport.abort()
        up_writer.transport.abort()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        while data := await source.read(65536):
            if replies and self.losing_replies:
                continue  # lost on the way back to the client
            sink.write(data)
            await sink.drain()
        sink.close()  # pass the end of the stream on


MakeLink = Callable[[RunningServer], Awaitable[FaultyLink]]


@pytest.fixture
async def make_link() -> AsyncIterator[MakeLink]:
    """Relays to a server whose faults the test controls, closed when the test ends."""
    links: list[FaultyLink] = []

    async def make(server: RunningServer) -> FaultyLink:
        link = FaultyLink(server.port)
        await link.start()
        links.append(link)
        return link

    yield make
    for link in links:
        await link.close()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


def free_port() -> int:
    """A loopback port with nothing listening on it (for "server unreachable")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_app(url: str, config_dir: Path, **options: Any) -> ClubroomApp:
    """The real app with a fast real client and a session store in a temp directory."""
    return ClubroomApp(fast_client(url, **options), SessionStore(config_dir))


async def wait_ready(client: ClubroomClient) -> None:
    async with asyncio.timeout(TIMEOUT):
        await client.wait_ready()


async def wait_connected(client: ClubroomClient) -> None:
    """Wait until the client has reconnected and restored its session by itself."""
    await wait_for(lambda: client.state is ConnectionState.CONNECTED, "the client to reconnect")


async def wait_for(condition: Callable[[], object], what: str) -> None:
    """Poll until ``condition()`` is true; fail naming ``what`` after TIMEOUT seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def screen_text(app: App[Any]) -> str:
    """Exactly the characters the user sees on the terminal, line by line."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def wait_for_text(pilot: Pilot[Any], *texts: str) -> str:
    """Wait until every text is on screen (TIMEOUT at most); return the screen."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        await pilot.pause()
        shown = screen_text(pilot.app)
        if all(text in shown for text in texts):
            return shown
        if asyncio.get_running_loop().time() > deadline:
            missing = [text for text in texts if text not in shown]
            raise AssertionError(f"not on screen: {missing!r}\n--- screen ---\n{shown}")
        await asyncio.sleep(0.02)


async def type_into(pilot: Pilot[Any], selector: str, text: str) -> None:
    """Focus a field (as tab would) and paste the text into it, as a terminal delivers a paste.

    Pasting rather than pressing each key keeps the tests fast; the keyboard
    test in ``test_app.py`` types key by key.
    """
    field = pilot.app.screen.query_one(selector)
    field.focus()
    await pilot.pause()
    assert pilot.app.focused is field, f"{selector} did not take the focus"
    field.post_message(events.Paste(text))
    await pilot.pause()


async def log_in(
    pilot: Pilot[Any], username: str, *, register: bool, remember: bool = False
) -> None:
    """Fill the login form and press Register or Log in; wait for the dashboard."""
    await wait_for_text(pilot, "● connected")
    await type_into(pilot, "#username", username)
    await type_into(pilot, "#password", PASSWORD)
    if remember:
        await pilot.click("#remember")
    await pilot.click("#register" if register else "#log-in")
    await wait_for_text(pilot, f"Hello, {username}!")


async def enter_room(pilot: Pilot[Any], room: str, *, create: bool) -> None:
    """Create or join a room from the dashboard; wait for the room screen."""
    field = "#create-name" if create else "#join-name"
    await type_into(pilot, field, room)
    await pilot.press("enter")
    await wait_for_text(pilot, f"# {room}", "Leave")


@contextlib.asynccontextmanager
async def ann_in_lobby(url: str, config_dir: Path) -> AsyncIterator[Pilot[Any]]:
    """The real app, registered as ann, inside the room "lobby" she created."""
    app = make_app(url, config_dir)
    async with app.run_test() as pilot:
        await log_in(pilot, "ann", register=True)
        await enter_room(pilot, "lobby", create=True)
        yield pilot


async def fill_login(pilot: Pilot[Any], username: str, password: str) -> None:
    """Wait until connected, then type credentials into the login form."""
    await wait_for_text(pilot, "● connected")
    await type_into(pilot, "#username", username)
    await type_into(pilot, "#password", password)


async def say(pilot: Pilot[Any], text: str) -> None:
    """Put a message into the composer and press Enter."""
    await type_into(pilot, "#composer", text)
    await pilot.press("enter")


def messages_added(events: list[Any]) -> list[str]:
    """The texts of all messages announced in these events, in order."""
    return [m.text for e in events if isinstance(e, MessagesAdded) for m in e.messages]


async def answer(pilot: Pilot[Any], question: str, *, yes: bool) -> str:
    """Wait for a confirmation that says ``question``, answer it, and return what it said."""
    shown = await wait_for_text(pilot, question)
    assert isinstance(pilot.app.screen, Confirm), "no confirmation is being asked"
    await pilot.click("#confirm-yes" if yes else "#confirm-no")
    await wait_for(lambda: not isinstance(pilot.app.screen, Confirm), "the question to close")
    return shown


async def quit_app(pilot: Pilot[Any]) -> None:
    """Quit with ctrl+q, saying yes if the app asks (it does when rooms could be deleted)."""
    await pilot.press("ctrl+q")
    await pilot.pause()
    if isinstance(pilot.app.screen, Confirm):
        await pilot.click("#confirm-yes")
    await wait_for(lambda: pilot.app.return_code is not None, "the app to exit")


def type_at_machine_speed(app: App[Any], text: str) -> None:
    """Deliver every character as a terminal key event, all at once, with no waits.

    This is the real input path (driver → app → focused widget) at a speed no
    person reaches, so nothing is given time to settle between keys; ``\n``
    is Enter.
    """
    keys: list[tuple[str, str | None]] = []
    for char in text:
        if char == "\n":
            keys.append(("enter", "\r"))
        else:
            keys.append((char if char.isalnum() else _character_to_key(char), char))
    press_at_machine_speed(app, *keys)


def press_at_machine_speed(app: App[Any], *keys: tuple[str, str | None]) -> None:
    """Deliver (key, character) events as the terminal driver would, all at once."""
    driver = app._driver
    assert driver is not None
    for key, character in keys:
        event = events.Key(key, character)
        event.set_sender(app)
        driver.send_message(event)


def paste(app: App[Any], text: str) -> None:
    """Deliver a bracketed paste through the real input path."""
    driver = app._driver
    assert driver is not None
    event = events.Paste(text)
    event.set_sender(app)
    driver.send_message(event)


async def seed_room(client: ClubroomClient, room: str, count: int, prefix: str = "old") -> None:
    """Fill a room with ``count`` messages quickly (the server must not rate-limit)."""
    pending = [client.queue_send(room, f"{prefix} {n:06d}") for n in range(count)]
    async with asyncio.timeout(TIMEOUT * 4):
        await asyncio.gather(*(item.future for item in pending))
