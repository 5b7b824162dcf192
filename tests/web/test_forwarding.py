"""Each browser visitor reaches the chat server under their own address (X-Forwarded-For).

The chat server's side (believing the header only from ``--trusted-proxy``
peers) is tested with the server; here a small recording WebSocket server
stands in for it and notes what each tab's client sends on its upgrade.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from http import HTTPStatus

import aiohttp
import pytest
from click.testing import CliRunner
from playwright.async_api import Page
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from clubroom_tui.cli import main
from clubroom_tui.web_forwarding import (
    FORWARDED_FOR_ENV,
    forwarded_for_headers,
    parse_networks,
    visitor_address,
)
from protocol import FORWARDED_FOR_HEADER
from tests.waiting import wait_until
from tests.web.conftest import StartWeb, TerminalScreen

LOCAL = parse_networks(["127.0.0.1"])


class UpgradeRecorder:
    """A WebSocket server that records each upgrade's X-Forwarded-For, then refuses it."""

    def __init__(self) -> None:
        self.forwarded_for: list[str | None] = []
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await serve(self._never, "127.0.0.1", 0, process_request=self._record)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _record(self, connection: ServerConnection, request: Request) -> Response:
        self.forwarded_for.append(request.headers.get(FORWARDED_FOR_HEADER))
        return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "recorded\n")

    async def _never(self, connection: ServerConnection) -> None:
        raise AssertionError("every upgrade is refused")

    def saw(self, *addresses: str) -> bool:
        return set(addresses) <= set(self.forwarded_for)


@pytest.fixture
async def recorder() -> AsyncIterator[UpgradeRecorder]:
    recorder = UpgradeRecorder()
    await recorder.start()
    yield recorder
    await recorder.close()


async def visit(
    session: aiohttp.ClientSession, web_url: str, forwarded_for: str | None
) -> aiohttp.ClientWebSocketResponse:
    """Open a tab's socket as a browser (or a reverse proxy in front of one) would."""
    headers = {FORWARDED_FOR_HEADER: forwarded_for} if forwarded_for else {}
    return await session.ws_connect(f"{web_url}/ws?width=80&height=24", headers=headers)


async def test_each_visitor_behind_a_trusted_proxy_reaches_the_server_as_themselves(
    start_web: StartWeb, recorder: UpgradeRecorder
) -> None:
    """Two visitors through a trusted proxy: the server is told each one's own address."""
    web = await start_web(recorder.url, "--trusted-proxy", "127.0.0.1")
    async with aiohttp.ClientSession() as session:
        first = await visit(session, web.url, "203.0.113.7")
        # the left part was written by the visitor: only the proxy's own entry counts
        second = await visit(session, web.url, "192.0.2.1, 198.51.100.9")
        await wait_until(lambda: recorder.saw("203.0.113.7", "198.51.100.9"), 20)
        await first.close()
        await second.close()
    assert set(recorder.forwarded_for) == {"203.0.113.7", "198.51.100.9"}


async def test_a_visitor_cannot_claim_another_address(
    start_web: StartWeb, recorder: UpgradeRecorder
) -> None:
    """Without --trusted-proxy a visitor's X-Forwarded-For is ignored; their real one is sent."""
    web = await start_web(recorder.url)
    async with aiohttp.ClientSession() as session:
        tab = await visit(session, web.url, "203.0.113.7")
        await wait_until(lambda: recorder.forwarded_for, 20)
        await tab.close()
    assert set(recorder.forwarded_for) == {"127.0.0.1"}


async def test_a_browser_visitor_address_reaches_the_server(
    start_web: StartWeb, recorder: UpgradeRecorder, page: Page
) -> None:
    """A Chromium tab's client tells the server the browser's own address."""
    web = await start_web(recorder.url)
    screen = TerminalScreen(page)
    await page.goto(web.url)
    await screen.shows("Welcome to Clubroom")
    await wait_until(lambda: recorder.forwarded_for, 20)
    assert set(recorder.forwarded_for) == {"127.0.0.1"}


def test_visitor_address_believes_only_trusted_proxies() -> None:
    """Only a trusted peer's header counts, read from the right, and garbage stops the walk."""
    proxies = parse_networks(["127.0.0.1", "10.0.0.0/8"])
    assert visitor_address("127.0.0.1", [], proxies) == "127.0.0.1"
    assert visitor_address("203.0.113.7", ["192.0.2.1"], proxies) == "203.0.113.7"
    assert visitor_address("127.0.0.1", ["192.0.2.1, 10.1.2.3"], proxies) == "192.0.2.1"
    assert visitor_address("127.0.0.1", ["192.0.2.1", "198.51.100.9"], proxies) == "198.51.100.9"
    assert visitor_address("127.0.0.1", ["not-an-ip, 10.1.2.3"], proxies) == "10.1.2.3"
    assert visitor_address("::ffff:203.0.113.7", [], proxies) == "203.0.113.7"
    assert visitor_address(None, ["192.0.2.1"], proxies) is None


def test_bad_trusted_proxy_is_refused() -> None:
    """A trusted proxy that is not an address or network is an error naming it."""
    with pytest.raises(ValueError, match=r"'proxy\.example'"):
        parse_networks(["proxy.example"])
    assert parse_networks(["::1"]) == (ipaddress.ip_network("::1"),)
    result = CliRunner().invoke(main, ["web", "--trusted-proxy", "proxy.example"])
    assert result.exit_code == 2
    assert "--trusted-proxy" in result.output and "'proxy.example'" in result.output


def test_client_sends_only_a_well_formed_address() -> None:
    """The client's header carries the variable's address, and never anything else."""
    assert forwarded_for_headers({FORWARDED_FOR_ENV: "203.0.113.7"}) == {
        FORWARDED_FOR_HEADER: "203.0.113.7"
    }
    assert forwarded_for_headers({FORWARDED_FOR_ENV: "1.2.3.4\r\nX-Evil: 1"}) == {}
    assert forwarded_for_headers({}) == {}
