"""Databases for tests: a fresh PostgreSQL database per test, and reading any backend's rows.

Every PostgreSQL test gets its own database, created from the admin URL in
``CLUBROOM_TEST_POSTGRES`` and dropped afterwards, so tests never see each
other's rows. Test servers get theirs already migrated: a copy of a template
database that this test process migrated once, because migrating each new
database took most of a PostgreSQL server test's start (0.6–1.3 s against
0.1–0.3 s for the copy). Migrating an empty database stays tested wherever a
test asks for ``fresh_postgres()`` itself. ``query`` lets end-to-end tests
look at what the server stored, whichever backend it runs on (the SQL they use
is plain and portable).
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

from clubroom_server.store import is_postgres_url, open_store, sqlite_path
from tests.services import postgres_url

BACKENDS = ("sqlite", "postgres")
TEMPLATE_PREFIX = "clubroom_test_template_"
# Connections each test server's main PostgreSQL pool may open. Four workers
# may each run a two-node cluster at once; at the shipped size (10 a node, plus
# the search, admin and presence pools) they reached 89 of PostgreSQL's 100
# connections in a measured run, so a machine where anything else holds a few
# refused the next ("too many clients"). Three is as many as any test uses at once.
TEST_POOL_SIZE = 3
_templates: dict[str, str] = {}  # admin URL -> this process's migrated template database


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@contextlib.asynccontextmanager
async def fresh_postgres(
    admin_url: str | None = None, *, migrated: bool = False
) -> AsyncIterator[str]:
    """A new database on the test PostgreSQL; dropped (connections and all) after.

    Empty, or with ``migrated`` a copy of Clubroom's current schema (as a
    server leaves a database it migrated, without the cost of migrating).
    """
    admin_url = admin_url or postgres_url()
    name = f"clubroom_test_{uuid.uuid4().hex[:16]}"
    template = await _migrated_template(admin_url) if migrated else None
    await _admin(admin_url, _create_sql(name, template))
    try:
        yield with_database(admin_url, name)
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _create_sql(name: str, template: str | None) -> str:
    if template is None:
        return f'CREATE DATABASE "{name}"'
    return f'CREATE DATABASE "{name}" TEMPLATE "{template}"'


async def _admin(admin_url: str, statement: str) -> None:
    """One statement on a connection of its own (CREATE/DROP DATABASE cannot share one)."""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def _migrated_template(admin_url: str) -> str:
    """This process's template database, migrated by the store as a server would, made once."""
    if admin_url not in _templates:
        name = f"{TEMPLATE_PREFIX}{uuid.uuid4().hex[:12]}"
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
        _templates[admin_url] = name  # dropped at the end of the session even if migrating fails
        store = await open_store(with_database(admin_url, name))
        await store.close()
    return _templates[admin_url]


def drop_templates() -> None:
    """Drop the templates this process made (at the end of its test session)."""

    async def drop() -> None:
        for admin_url, name in _templates.items():
            await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    if _templates:
        asyncio.run(drop())
        _templates.clear()


@contextlib.asynccontextmanager
async def database_url(
    backend: str, folder: Any, name: str = "clubroom", *, migrated: bool = False
) -> AsyncIterator[str]:
    """A URL of a fresh database of ``backend`` (SQLite files live in ``folder``).

    Empty, except that a PostgreSQL one is already migrated with ``migrated``.
    """
    if backend == "postgres":
        async with fresh_postgres(migrated=migrated) as url:
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
