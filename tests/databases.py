"""Databases for tests: a fresh PostgreSQL database per test, and reading any backend's rows.

Every PostgreSQL test gets its own database, created from the admin URL in
``CLUBROOM_TEST_POSTGRES`` and dropped afterwards, so tests never see each
other's rows. ``query`` lets end-to-end tests look at what the server stored,
whichever backend it runs on (the SQL they use is plain and portable).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from clubroom_server.store import is_postgres_url, sqlite_path
from tests.services import postgres_url

BACKENDS = ("sqlite", "postgres")


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@contextlib.asynccontextmanager
async def fresh_postgres(admin_url: str | None = None) -> AsyncIterator[str]:
    """A new, empty database on the test PostgreSQL; dropped (connections and all) after."""
    admin_url = admin_url or postgres_url()
    name = f"clubroom_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(admin_url, name)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def database_url(backend: str, folder: Any, name: str = "clubroom") -> AsyncIterator[str]:
    """A URL of a fresh, empty database of ``backend`` (SQLite files live in ``folder``)."""
    if backend == "postgres":
        async with fresh_postgres() as url:
            yield url
    else:
        yield f"sqlite:///{folder}/{name}.db"


async def query(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the database at ``url`` (``?`` placeholders) and return its rows."""
    if is_postgres_url(url):
        numbered = sql
        for index in range(1, len(params) + 1):
            numbered = numbered.replace("?", f"${index}", 1)
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(numbered, *params)]
        finally:
            await conn.close()
    path = sqlite_path(url)
    assert path is not None

    def run() -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            return db.execute(sql, params).fetchall()

    return await asyncio.to_thread(run)
