"""Fixtures for server tests: wire clients that are closed when the test ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.conftest import RunningServer
from tests.wsclient import WireClient

Connect = Callable[..., Awaitable[WireClient]]


@pytest.fixture
async def connect(server: RunningServer) -> AsyncIterator[Connect]:
    """Open wire clients to ``server`` (registered as ``username`` if given)."""
    clients: list[WireClient] = []

    async def open_client(username: str | None = None, url: str | None = None) -> WireClient:
        client = await WireClient.open(url or server.url)
        clients.append(client)
        if username:
            await client.register(username)
        return client

    yield open_client
    for client in clients:
        await client.close()
