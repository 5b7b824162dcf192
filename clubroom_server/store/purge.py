"""Erasing deleted messages' words from SQLite's FTS5 index, soon after, off the answer's path.

A deletion overwrites the message's text in its row, and the FTS5 trigger
adds a *delete marker* to the search index: from that commit on, searches no
longer find the message. But SQLite 3.40 (the one Python ships here) has no
FTS5 ``secure-delete``: the words themselves stay in the index's older
segments until a merge rewrites those, and only a merge of the whole index
reaches the oldest. Doing that (``optimize``) inside the deletion made it
take 160–340 ms in a room of 100,000 messages, with every send waiting.

So a deletion only counts itself (``search_purge.pending``, in its own
transaction) and is answered at once; the ``SearchPurger`` then merges the
whole index in steps of ``PURGE_PAGES`` pages, each step a write of its own
in the writer's group commit (sends go between them), and subtracts the
deletions it covered. FTS5 ``'merge', -N`` starts a merge of every segment
and ``'merge', N`` carries it on; one that does nothing says it is done.
A crash mid-way leaves ``pending`` above zero: the next start purges again.
Then the WAL is truncated (``on_purged``), so the words leave ``clubroom.db*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from clubroom_server.store.interface import StoreError

log = logging.getLogger(__name__)

PURGE_DELAY = 0.5  # seconds a purge waits, so a burst of deletions shares one
PURGE_PAGES = 64  # index pages (~4 KB) merged per write step; a word's list is never split
# Steps beyond the index's size (the merge writes each page about once):
# then other merges (of sends' new segments) are taking the steps' budget,
# and one ``optimize`` finishes the job.
SLACK_STEPS = 4

WriteOp = Callable[[sqlite3.Connection], Any]
Write = Callable[[WriteOp], Awaitable[Any]]


def count_deletion(db: sqlite3.Connection) -> None:
    """Note, in the deletion's transaction, that the index holds words to erase."""
    db.execute("UPDATE search_purge SET pending = pending + 1")


def pending(db: sqlite3.Connection) -> int:
    """Deletions whose words may still be in the index."""
    (count,) = db.execute("SELECT pending FROM search_purge").fetchone()
    return int(count)


def _begin(db: sqlite3.Connection) -> tuple[int, int]:
    """Start merging every segment: (deletions this covers, most steps it may take).

    The count is read in the transaction that starts the merge, so every
    deletion counted is in a segment the merge takes in.
    """
    covered = pending(db)
    if not covered:
        return 0, 0
    (pages,) = db.execute("SELECT COUNT(*) FROM messages_fts_data").fetchone()
    db.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('merge', ?)", (-PURGE_PAGES,))
    return covered, math.ceil(pages / PURGE_PAGES) + SLACK_STEPS


def _step(db: sqlite3.Connection) -> bool:
    """Merge up to ``PURGE_PAGES`` more pages; False once there was nothing left to merge."""
    before = db.total_changes
    db.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('merge', ?)", (PURGE_PAGES,))
    return db.total_changes - before >= 2  # FTS5's documented sign of work done


def _optimize(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")


def _finish(db: sqlite3.Connection, covered: int) -> None:
    db.execute("UPDATE search_purge SET pending = pending - ?", (covered,))


class SearchPurger:
    """The background task that erases deleted words from the index (see the module)."""

    def __init__(self, write: Write, on_purged: Callable[[], None]) -> None:
        self._write = write
        self._on_purged = on_purged
        self._wanted = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # purges completed
        self._finished = asyncio.Condition()

    def start(self, due: bool) -> None:
        """Run in the background; ``due``: the database holds deletions not purged yet."""
        if due:
            self._wanted.set()
        self._task = asyncio.create_task(self._loop(), name="store-search-purge")

    async def wait_past(self, rounds: int) -> None:
        """Wait until more than ``rounds`` purges have finished (for the benchmark)."""
        async with self._finished:
            await self._finished.wait_for(lambda: self.rounds > rounds)

    def wanted(self) -> None:
        """A deletion was committed: purge soon."""
        self._wanted.set()

    async def stop(self) -> None:
        """Stop between two steps (by flag: a cancelled write could be lost half done)."""
        self._stopping.set()
        self._wanted.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self._wanted.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PURGE_DELAY):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            self._wanted.clear()
            try:
                await self._purge()
            except StoreError as exc:  # the next deletion or start tries again
                log.warning("erasing deleted words from the search index failed: %s", exc)

    async def _purge(self) -> None:
        covered, most_steps = await self._write(_begin)
        if not covered:
            return
        for _ in range(most_steps):
            if self._stopping.is_set():
                return  # ``pending`` is kept: the next start finishes it
            if not await self._write(_step):
                break
        else:
            await self._write(_optimize)
        await self._write(lambda db: _finish(db, covered))
        self._on_purged()
        async with self._finished:
            self.rounds += 1
            self._finished.notify_all()
