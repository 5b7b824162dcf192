"""Fixtures of the store contract suite: every test runs once per backend."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from clubroom_server.store import Store, open_store
from tests.databases import BACKENDS, database_url
from tests.server.store.backends import ADAPTERS, Backend

MakeUrl = Callable[[], Awaitable[str]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend under test (SQLite in tmp_path, or a fresh PostgreSQL database)."""
    return ADAPTERS[request.param]


@pytest.fixture
async def make_url(backend: Backend, tmp_path: Path) -> AsyncIterator[MakeUrl]:
    """Fresh, empty databases of the backend under test, dropped at the end."""
    numbers = itertools.count()
    async with contextlib.AsyncExitStack() as stack:

        async def make() -> str:
            fresh = database_url(backend.name, tmp_path, f"db{next(numbers)}")
            return await stack.enter_async_context(fresh)

        yield make


@pytest.fixture
async def url(make_url: MakeUrl) -> str:
    return await make_url()


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    """An open store on a fresh database; closed after the test."""
    opened = await open_store(url, synchronous="NORMAL")
    yield opened
    await opened.close()
