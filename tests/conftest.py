"""Shared fixtures: a real Clubroom server on a free loopback port with a temp SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clubroom_server.app import Clubroom
from clubroom_server.config import Settings
from clubroom_server.store import sqlite_path

# Tests hash with the cheapest argon2 profile (except the tests about hashing),
# keep the grace period short and leave every other default as shipped.
TEST_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "grace": 2.0,
    "argon2_profile": "cheapest",
    "synchronous": "NORMAL",
}


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
    def db_path(self) -> Path:
        """The SQLite file (tests that read the file itself run on SQLite only)."""
        path = sqlite_path(self.settings.db)
        assert path is not None, "this server does not use SQLite"
        return path

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
async def make_server(tmp_path: Path) -> AsyncIterator[MakeServer]:
    """A factory of running servers; every one is stopped at the end of the test."""
    servers: list[RunningServer] = []

    async def make(**overrides: Any) -> RunningServer:
        options = {**TEST_DEFAULTS, "db": str(tmp_path / f"clubroom{len(servers)}.db")}
        if "db_path" in overrides:
            overrides["db"] = str(overrides.pop("db_path"))
        options.update(overrides)
        server = RunningServer(Settings(**options))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: MakeServer) -> RunningServer:
    """One running server with the test defaults."""
    return await make_server()
