"""Databases for cluster tests: the shared helper, plus the schema without a server."""

from __future__ import annotations

from clubroom_server.store import open_store
from tests.databases import fresh_postgres

__all__ = ["apply_schema", "fresh_postgres"]


async def apply_schema(url: str) -> None:
    """Clubroom's schema, migrated exactly as a node migrates it on start."""
    store = await open_store(url)
    await store.close()
