"""Shared fixtures: a real Clubroom server on a free loopback port with a fresh database.

Servers use SQLite by default; the server tests (tests/server/conftest.py)
run each test that makes servers on SQLite, on PostgreSQL, and on a
three-node cluster (PostgreSQL + Redis) whose ``url`` hands out its nodes in
turn, so the clients of one test are spread over the nodes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from clubroom_server.app import Clubroom
from clubroom_server.config import Settings
from clubroom_server.store import sqlite_path
from tests.cluster.harness import CLUSTER_DEFAULTS, InProcessCluster, bus_prefix, forget_prefixes
from tests.databases import TEST_POOL_SIZE, database_url, drop_templates, query
from tests.redisserver import RedisServer
from tests.services import REDIS_VAR, redis_url
from tests.wsclient import WireClient

# Tests hash with the cheapest argon2 profile (except the tests about hashing),
# keep the grace period short and leave every other default as shipped.
TEST_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "grace": 2.0,
    "argon2_profile": "cheapest",
    "synchronous": "NORMAL",
    # Tests register many accounts from one loopback address; the tests of the
    # registration limits (tests/server/test_throttling.py) switch them on.
    "registrations_per_address": 0,
    "registrations_total": 0,
    "db_pool_size": TEST_POOL_SIZE,  # see tests.databases
}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the migrated template databases this process made (tests.databases)."""
    drop_templates()


@pytest.fixture(autouse=True)
def _clean_redis_keys() -> Iterator[None]:
    """Delete the shared Redis keys under the prefixes this test used."""
    yield
    if os.environ.get(REDIS_VAR):
        forget_prefixes(os.environ[REDIS_VAR])


class RunningServer:
    """A real server that a test can stop and start again on the same port and database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Clubroom | None = None

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def db(self) -> str:
        """The ``--db`` URL of this server's database."""
        return self.settings.db

    @property
    def db_path(self) -> Path:
        """The SQLite file (tests that read the file itself are marked ``sqlite_only``)."""
        path = sqlite_path(self.settings.db)
        assert path is not None, "this server does not use SQLite"
        return path

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """What the database holds, read on a connection of the test's own."""
        return await query(self.settings.db, sql, params)

    async def start(self) -> None:
        """Start (again) on the same port and database."""
        assert self.app is None, "already running"
        self.app = await Clubroom.start(self.settings)
        self.settings = self.settings.replace(port=self.app.port)

    async def stop(self) -> None:
        """Shut down in order, exactly as SIGTERM would."""
        if self.app is not None:
            app, self.app = self.app, None
            await app.close()


MakeServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    """The database the test servers use: SQLite, unless tests/server parametrises it."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
async def make_server(tmp_path: Path, db_backend: str) -> AsyncIterator[MakeServer]:
    """A factory of running servers; every one is stopped at the end of the test.

    Each server gets a fresh database of ``db_backend`` unless ``db=`` names
    one (e.g. another server's, to restart on the same data).
    """
    servers: list[RunningServer] = []
    async with contextlib.AsyncExitStack() as databases:

        async def make(**overrides: Any) -> RunningServer:
            if "db_path" in overrides:  # the older spelling: a SQLite file
                overrides["db"] = str(overrides.pop("db_path"))
            backend = "postgres" if db_backend == "cluster" else db_backend
            if "db" not in overrides:
                fresh = database_url(backend, tmp_path, f"clubroom{len(servers)}", migrated=True)
                overrides["db"] = await databases.enter_async_context(fresh)
            if db_backend == "cluster":
                server: RunningServer = cluster_of_nodes(overrides)  # type: ignore[assignment]
            else:
                server = RunningServer(Settings(**{**TEST_DEFAULTS, **overrides}))
            servers.append(server)
            await server.start()
            return server

        try:
            yield make
        finally:
            for server in servers:
                await server.stop()


def cluster_of_nodes(overrides: dict[str, Any]) -> InProcessCluster:
    """Three nodes on one fresh PostgreSQL database and the test Redis (own channels)."""
    settings = {**TEST_DEFAULTS, **CLUSTER_DEFAULTS, "bus": redis_url(), "bus_prefix": bus_prefix()}
    return InProcessCluster(Settings(**{**settings, **overrides}))


@pytest.fixture
async def server(make_server: MakeServer) -> RunningServer:
    """One running server with the test defaults."""
    return await make_server()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A Redis of this test's own, which it may stop and restart (never the shared one)."""
    redis = RedisServer(tmp_path)
    await redis.start()
    yield redis
    await redis.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[WireClient]]:
    """Clients to close at the end of the test."""
    opened: list[WireClient] = []
    yield opened
    for client in opened:
        await client.close()
