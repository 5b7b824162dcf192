"""Fixtures for server tests: every test runs on each backend; wire clients closed at the end.

A test that makes a server runs three times: on SQLite, on PostgreSQL (a
fresh database from ``CLUBROOM_TEST_POSTGRES``; skipped with the reason where
it is not set, failed where ``CLUBROOM_REQUIRE_SERVICES=1``) and on a
three-node cluster (PostgreSQL + ``CLUBROOM_TEST_REDIS``). A test about the
SQLite file itself is marked ``sqlite_only``; one about a single process's
own workings (restarting it, its in-memory limits) ``single_process``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.conftest import RunningServer
from tests.databases import BACKENDS
from tests.wsclient import WireClient

Connect = Callable[..., Awaitable[WireClient]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every server-making test on each backend (``sqlite_only`` ones on SQLite)."""
    if "db_backend" not in metafunc.fixturenames:
        return
    only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
    one_process = metafunc.definition.get_closest_marker("single_process") is not None
    backends = ["sqlite"] if only_sqlite else list(BACKENDS)
    if not only_sqlite and not one_process:
        backends.append("cluster")
    metafunc.parametrize("db_backend", backends, indirect=True)


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
