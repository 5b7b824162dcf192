"""A connection back in a PostgreSQL pool costs no reset statement (``pgconnection.py``).

asyncpg's default sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
UNLISTEN *; RESET ALL`` after every use of a pooled connection: a round trip
per read or commit. PostgreSQL's own view of its sessions shows each one's
last statement, so after the store has written and read, none of its
connections may show that reset as the last thing it did.
"""

from __future__ import annotations

from pathlib import Path

from clubroom_server.store import open_store
from tests.databases import database_url, query

RESET = "%pg_advisory_unlock_all%"


async def test_the_store_returns_connections_to_its_pools_without_a_reset(tmp_path: Path) -> None:
    async with database_url("postgres", tmp_path) as url:
        store = await open_store(url)
        try:
            user = await store.add_user("ann", "ann", "hash", 1)
            assert await store.user_by_key("ann") == user
            await store.set_password_hash(user.id, "other")
            sessions = await query(
                url,
                "SELECT query FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'clubroom' "
                "AND pid <> pg_backend_pid()",
            )
            resets = await query(
                url,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE ? AND pid <> pg_backend_pid()",
                (RESET,),
            )
        finally:
            await store.close()
    assert sessions, "the store's connections were not found"
    assert resets == [(0,)], f"last statements: {sessions}"
