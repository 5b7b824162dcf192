"""What the contract suite needs to know about each backend, and nothing more.

The contract tests speak only the store interface. A few of them must first
put a database into a state the interface cannot produce (the first schema,
a schema from the future, another application's tables, a full disk): those
preparations live here, one class per backend, so the tests stay generic.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any, Protocol

import asyncpg

from clubroom_server.store import migrations, sqlite_path

# The first schema's rows: (table, columns, rows), inserted in this order.
FirstSchemaRows = list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]]


class Backend(Protocol):
    name: str

    async def build_first_schema(self, url: str, rows: FirstSchemaRows) -> None:
        """A database exactly as Clubroom 0.1 (schema 1) left it, holding ``rows``."""
        ...

    async def claim_schema_version(self, url: str, version: int) -> None:
        """Mark an open-and-closed Clubroom database as having schema ``version``."""
        ...

    async def add_foreign_table(self, url: str) -> None:
        """Make the (empty) database look like another application's."""
        ...


class SQLiteBackend:
    name = "sqlite"

    async def build_first_schema(self, url: str, rows: FirstSchemaRows) -> None:
        script = migrations.scripts("sqlite")[0]

        def build(db: sqlite3.Connection) -> None:
            db.executescript(f"BEGIN;{script};PRAGMA user_version=1;COMMIT;")
            for table, columns, values in rows:
                marks = ", ".join("?" for _ in columns)
                db.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values
                )

        await self._run(url, build)

    async def claim_schema_version(self, url: str, version: int) -> None:
        await self._run(url, lambda db: db.execute(f"PRAGMA user_version={version}"))

    async def add_foreign_table(self, url: str) -> None:
        await self._run(url, lambda db: db.execute("CREATE TABLE accounts (id INTEGER)"))

    @staticmethod
    async def _run(url: str, work: Any) -> None:
        path = sqlite_path(url)
        assert path is not None

        def run() -> None:
            with contextlib.closing(sqlite3.connect(path)) as db, db:
                work(db)

        await asyncio.to_thread(run)


class PostgresBackend:
    name = "postgres"

    async def build_first_schema(self, url: str, rows: FirstSchemaRows) -> None:
        script = migrations.scripts("postgres")[0]
        async with _connection(url) as conn, conn.transaction():
            await conn.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (1)")
            for table, columns, values in rows:
                marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
                await conn.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values
                )
            for table in ("users", "rooms", "messages"):  # as if the ids had been generated
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT MAX(id) FROM {table})) WHERE EXISTS (SELECT 1 FROM {table})"
                )

    async def claim_schema_version(self, url: str, version: int) -> None:
        async with _connection(url) as conn:
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)

    async def add_foreign_table(self, url: str) -> None:
        async with _connection(url) as conn:
            await conn.execute("CREATE TABLE accounts (id INTEGER)")


@contextlib.asynccontextmanager
async def _connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


ADAPTERS: dict[str, Backend] = {"sqlite": SQLiteBackend(), "postgres": PostgresBackend()}
