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
from clubroom_tui.screens.react import ReactPicker
from clubroom_tui.sessions import SessionStore
from clubroom_tui.widgets.message_log import MessageLog
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
async def logged_in(
    url: str,
    config_dir: Path,
    user: str = "ann",
    *,
    register: bool = True,
    remember: bool = False,
    room: str | None = None,
    create: bool = True,
    size: tuple[int, int] = (80, 24),
    **options: Any,
) -> AsyncIterator[Pilot[Any]]:
    """The real app at ``size``, logged in through its form as ``user``; inside ``room`` if named.

    ``register`` makes the account through the form (else it exists already),
    ``remember`` ticks "Remember me"; ``create`` makes the room from the
    dashboard (else the user joins it).
    ``options`` go to the app's client, as in :func:`make_app`.
    """
    app = make_app(url, config_dir, **options)
    async with app.run_test(size=size) as pilot:
        await log_in(pilot, user, register=register, remember=remember)
        if room is not None:
            await enter_room(pilot, room, create=create)
        yield pilot


def ann_in_lobby(url: str, config_dir: Path) -> contextlib.AbstractAsyncContextManager[Pilot[Any]]:
    """The real app, registered as ann, inside the room "lobby" she created."""
    return logged_in(url, config_dir, room="lobby")


async def member(
    make_client: MakeClient,
    room: str,
    name: str = "bob",
    *,
    create: bool = False,
    url: str | None = None,
) -> ClubroomClient:
    """Another user, registered as ``name``, who joins ``room`` (or creates it).

    ``url`` names another server than the ``server`` fixture's.
    """
    client = await make_client(name, url=url)
    await (client.create_room(room) if create else client.join_room(room))
    return client


async def two_clients_in_lobby(
    make_client: MakeClient,
    *,
    url: str | None = None,
    ann_url: str | None = None,
    **ann_options: Any,
) -> tuple[ClubroomClient, ClubroomClient]:
    """Started clients of ann, who creates "lobby", and of bob, who joins it.

    Both reach ``url`` (the ``server`` fixture's unless named); ann through
    ``ann_url`` instead if given (a faulty link), and with ``ann_options``.
    """
    ann = await make_client("ann", url=ann_url or url, **ann_options)
    bob = await make_client("bob", url=url)
    await ann.create_room("lobby")
    await bob.join_room("lobby")
    return ann, bob


@contextlib.asynccontextmanager
async def ann_and_bob_in_lobby(
    url: str, config_dir: Path, make_client: MakeClient
) -> AsyncIterator[tuple[Pilot[Any], ClubroomClient]]:
    """ann's app inside "lobby", which she created, and bob (a client of his own) who joined it."""
    async with ann_in_lobby(url, config_dir) as pilot:
        yield pilot, await member(make_client, "lobby")


async def hear_from(pilot: Pilot[Any], client: ClubroomClient, room: str, *texts: str) -> str:
    """``client`` sends each text to ``room``; wait until the app shows them all, by author.

    Returns the screen once every ``author: text`` line is on it.
    """
    for text in texts:
        await client.send(room, text)
    return await wait_for_text(pilot, *(f"{client.username}: {text}" for text in texts))


async def say_and_see(pilot: Pilot[Any], *texts: str) -> str:
    """Send each text from the composer; wait until the log shows them all as the user's own."""
    for text in texts:
        await say(pilot, text)
    me = pilot.app.client.username
    return await wait_for_text(pilot, *(f"{me}: {text}" for text in texts))


async def to_dashboard(pilot: Pilot[Any], *texts: str) -> str:
    """Escape from a room to the dashboard; wait for "Your rooms" and ``texts`` on it."""
    await pilot.press("escape")
    return await wait_for_text(pilot, "Your rooms", *texts)


async def choose_newest(pilot: Pilot[Any]) -> MessageLog:
    """ctrl+up: the log takes the focus with the newest message chosen."""
    await pilot.press("ctrl+up")
    log = pilot.app.screen.query_one(MessageLog)
    await wait_for(lambda: pilot.app.focused is log and log.selected is not None, "a choice")
    return log


async def say_and_choose(pilot: Pilot[Any], text: str) -> MessageLog:
    """Send ``text``, wait for it in the log, then choose it there (it is the newest)."""
    await say_and_see(pilot, text)
    return await choose_newest(pilot)


async def open_picker(pilot: Pilot[Any]) -> None:
    """r on the chosen message: wait for the reaction picker to be the screen."""
    await pilot.press("r")
    await wait_for(lambda: isinstance(pilot.app.screen, ReactPicker), "the picker")


async def delete_chosen(pilot: Pilot[Any], question: str, author: str) -> None:
    """d on the chosen message, yes to ``question``: wait for its tombstone by ``author``."""
    await pilot.press("d")
    await answer(pilot, question, yes=True)
    await wait_for_text(pilot, f"{author}: message deleted")


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
