"""A room crowded with messages, and a table held locked: what a search timeout test needs.

A test of the search timeout sets a tiny ``search_timeout`` and then asks a
search that must do a lot of work, rather than waiting for a slow one:

* SQLite looks at its clock every ``PROGRESS_STEPS`` steps of its virtual
  machine, so the search must take more steps than that: ``DEEP_OFFSET``
  newest first over a room of ``CROWD`` matching messages reads every
  message up to the offset, several steps each.
* PostgreSQL's ``statement_timeout`` counts in whole milliseconds, which a
  search of a small database may not reach: there the test also holds the
  messages table locked (as a migration or ``VACUUM FULL`` would), so the
  search waits past its timeout whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg

from clubroom_server.store import (
    HighWater,
    MessageRecord,
    RoomRecord,
    Store,
    is_postgres_url,
    open_store,
)
from protocol import SEARCH_OFFSET_MAX, room_key

CROWD = 30_000
DEEP_OFFSET = SEARCH_OFFSET_MAX
WORD = "kiwi"


def counted(n: int) -> str:
    """The text of a crowded room's ``n``-th message (from 0): WORD and its number."""
    return f"{WORD} {n}"


async def crowd(
    store: Store, room: str, count: int = CROWD, text: Callable[[int], str] = counted
) -> RoomRecord:
    """A new room of ``count`` messages (``text(n)`` each), loaded in bulk as ``copy`` does."""
    marks = await store.high_water()
    author = await store.add_user("crowd", "crowd", "$argon2id$fake", 0)
    record = RoomRecord(id=marks.rooms + 1, name=room, key=room_key(room), last_seq=count)
    await store.load([record])
    first = marks.messages + 1
    for start in range(0, count, 5000):
        await store.load(
            [
                MessageRecord(first + n, record.id, n + 1, author.id, "crowd", text(n), n)
                for n in range(start, min(start + 5000, count))
            ]
        )
    await store.raise_high_water(
        HighWater(users=author.id, rooms=record.id, messages=first + count)
    )
    return record


async def crowded_database(url: str, room: str) -> None:
    """Put a crowded ``room`` into the (fresh) database at ``url`` before a server opens it."""
    store = await open_store(url, synchronous="NORMAL")
    try:
        await crowd(store, room)
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def messages_locked(url: str) -> AsyncIterator[None]:
    """On PostgreSQL, hold the messages table locked so no read of it can start; else nothing."""
    if not is_postgres_url(url):
        yield
        return
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()
