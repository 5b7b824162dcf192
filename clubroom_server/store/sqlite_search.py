"""SQLite search: the FTS5 statements, on a connection of their own, with a deadline.

Searches get their own read connection (and so their own thread), as they
get their own pool on PostgreSQL: a search that reads many index entries
then delays other searches only, never history, joins or sends. And each
search runs under a deadline: SQLite calls a progress handler every
``PROGRESS_STEPS`` virtual-machine steps, which stops the statement once it
has run ``timeout`` seconds (``SearchTooSlow``; the connection stays usable).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import aiosqlite

from clubroom_server.store.interface import SearchTooSlow, StoreError
from clubroom_server.store.records import TABLE_OF, MessageRecord

_INTERRUPT_CODE = 9  # SQLITE_INTERRUPT: the progress handler stopped the statement
# About 1–5 ms of work between two looks at the clock: the handler takes the
# GIL, which a busy event loop may hold for up to 5 ms, so it must not run
# every few rows (the rows themselves already take it once each).
PROGRESS_STEPS = 10_000

MESSAGE_FIELDS = len(TABLE_OF[MessageRecord].columns)
M_COLUMNS = ", ".join(f"m.{column}" for column in TABLE_OF[MessageRecord].columns)
# The index's delete markers already hide deleted and edited-away text; the
# row is checked too, so that no state of the index can show a deleted message.
LIVE = " AND m.kind = 0 AND m.deleted_ms IS NULL"
# The index has the room of each message as a token of its own (migration
# 8): FTS5 finds the room's matches itself, and only those are looked up
# (the room is checked again on the row, as is whether it is live).
# Newest first: FTS5 walks its matches by descending rowid and stops at the
# page (ordering by m.id instead made the planner scan the whole room).
SEARCH_NEWEST = (
    f"SELECT {M_COLUMNS} FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
    f"WHERE messages_fts MATCH ? AND m.room_id = ?{LIVE} ORDER BY messages_fts.rowid DESC "
    "LIMIT ? OFFSET ?"
)
# Best first ranks (bm25) the room's BEST_CANDIDATES newest matches: scoring
# every match of a very common word in a large room costs too much (135 ms
# for 40,000 matches), and in a chat the best of the recent ones is wanted.
# 1,000 (not 2,000) halves the time of a very common word on both backends.
BEST_CANDIDATES = 1000
SEARCH_BEST = (
    f"SELECT * FROM (SELECT {M_COLUMNS}, bm25(messages_fts) AS score FROM messages_fts "
    "JOIN messages m ON m.id = messages_fts.rowid "
    f"WHERE messages_fts MATCH ? AND m.room_id = ?{LIVE} "
    f"ORDER BY messages_fts.rowid DESC LIMIT {BEST_CANDIDATES}) "
    "ORDER BY score, id DESC LIMIT ? OFFSET ?"
)


def in_room(room_id: int, match: str) -> str:
    """The FTS5 query for ``match`` (quoted phrases) among the room's messages only."""
    return f"room : r{room_id} AND text : ({match})"


class Deadline:
    """SQLite's progress handler for one search: nonzero (stop) once it has run too long.

    Made just before the search's statement is queued on the connection's
    thread, where no other search waits (``SearchConnection._turn``), so the
    clock starts when the search does.
    """

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def __call__(self) -> int:
        return int(time.monotonic() > self.until)


class SearchConnection:
    """The read connection searches run on, one at a time, each under its deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._db: aiosqlite.Connection | None = None
        # The handler is set, then the statement run: two steps on the
        # connection's thread that another search must not come between.
        self._turn = asyncio.Lock()

    async def open(self, db: aiosqlite.Connection) -> None:
        """Take an open connection (the store's pragmas applied); reads only from now on."""
        self._db = db
        await db.execute("PRAGMA query_only=ON")

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def rows(
        self, room_id: int, match: str, newest: bool, offset: int, limit: int
    ) -> list[MessageRecord]:
        """Up to ``limit`` rows of the room matching the FTS5 ``match``, from ``offset``."""
        found = await self._run(
            SEARCH_NEWEST if newest else SEARCH_BEST,
            (in_room(room_id, match), room_id, limit, offset),
        )
        return [MessageRecord(*row[:MESSAGE_FIELDS]) for row in found]

    async def _run(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if self._db is None:
            raise StoreError("the store is not open")
        async with self._turn:
            try:
                await self._db.set_progress_handler(Deadline(self.timeout), PROGRESS_STEPS)
                return list(await self._db.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", None) == _INTERRUPT_CODE:
                    raise SearchTooSlow(f"stopped after {self.timeout:g} s") from None
                raise
