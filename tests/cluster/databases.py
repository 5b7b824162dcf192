"""A fresh PostgreSQL database per cluster test, with Clubroom's schema, dropped after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from clubroom_server.store import migrations
from tests.services import postgres_url


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


@contextlib.asynccontextmanager
async def fresh_postgres() -> AsyncIterator[str]:
    """A new, empty database on the test PostgreSQL; dropped (connections and all) after."""
    admin_url = postgres_url()
    name = f"clubroom_cluster_{uuid.uuid4().hex[:16]}"
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


async def apply_schema(url: str) -> None:
    """Clubroom's PostgreSQL migrations, as a node applies them on start."""
    conn = await asyncpg.connect(url)
    try:
        for script in migrations.scripts("postgres"):
            await conn.execute(script)
    finally:
        await conn.close()
