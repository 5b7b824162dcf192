"""PostgreSQL only: search needs the unaccent and btree_gin extensions, and says so.

A role that may not create them (no CREATE on the database, and no superuser
made them) gets one sentence naming the extensions and the fix, not a driver
traceback, and the database is left at the schema before (nothing half done).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from clubroom_server.store import StartupError, open_store
from tests.databases import fresh_postgres
from tests.services import postgres_url


@contextlib.asynccontextmanager
async def role_without_create(database_url: str) -> AsyncIterator[str]:
    """A login role that may make tables in ``public`` but not extensions in the database."""
    name = f"clubroom_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE ROLE "{name}" LOGIN')
        await admin.execute(f'GRANT CREATE ON SCHEMA public TO "{name}"')
        parts = urlsplit(database_url)
        netloc = f"{name}@{parts.hostname}:{parts.port or 5432}"
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        await admin.execute(f'DROP OWNED BY "{name}"')
        await admin.close()
        server = await asyncpg.connect(postgres_url())
        try:
            await server.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await server.close()


async def test_a_role_that_cannot_create_the_extensions_gets_a_clear_startup_error() -> None:
    async with fresh_postgres() as url, role_without_create(url) as limited:
        with pytest.raises(StartupError) as caught:
            await open_store(limited)
        message = str(caught.value)
        assert "unaccent" in message and "btree_gin" in message
        assert "CREATE EXTENSION unaccent" in message and "\n" not in message
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT MAX(version) FROM schema_migrations") == 6
        finally:
            await conn.close()
        store = await open_store(url)  # a role that may: the same database starts
        await store.close()
