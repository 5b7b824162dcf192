"""What each backend does when its database goes away in the middle of writing.

PostgreSQL: the test's own server is crashed mid-write; calls fail with
``UnavailableError``, nothing acknowledged is lost, and the store recovers by
itself when the server is back. SQLite: the disk fills up mid-write; writes
fail with ``StoreError`` (an internal error, not a passing outage) and succeed
again once there is room, with nothing acknowledged lost.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from clubroom_server.store import (
    MessageRecord,
    StartupError,
    Store,
    StoreError,
    UnavailableError,
    open_store,
)
from clubroom_server.store.sqlite import SQLiteStore
from tests.pginstance import PASSWORD, OwnPostgres, private_postgres
from tests.waiting import wait_until

__all__ = ["private_postgres"]  # the fixture
NOW = 1_700_000_000_000


class Writers:
    """Tasks appending to one room as fast as they can, noting what was acknowledged."""

    def __init__(self, store: Store, room_id: int, user_id: int, count: int = 10) -> None:
        self.store, self.room_id, self.user_id = store, room_id, user_id
        self.acked: list[MessageRecord] = []
        self.errors: list[Exception] = []
        self._running = True
        self._tasks = [asyncio.create_task(self._write(n)) for n in range(count)]

    async def _write(self, writer: int) -> None:
        sent = 0
        while self._running:
            sent += 1
            try:
                text = f"w{writer}-{sent}"
                self.acked.append(
                    await self.store.append_message(self.room_id, self.user_id, "ann", text, NOW)
                )
            except StoreError as exc:
                self.errors.append(exc)
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)


async def assert_nothing_acknowledged_was_lost(store: Store, room_id: int, acked: list) -> None:  # type: ignore[type-arg]
    stored, more = await store.messages_after(room_id, 0, 100_000)
    assert not more
    assert set(acked) <= set(stored), "every acknowledged message is stored"
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1)), "seq stays dense"
    assert [m.id for m in stored] == sorted(m.id for m in stored)


async def test_postgres_going_away_mid_write_answers_unavailable_and_recovers(
    private_postgres: OwnPostgres,
) -> None:
    """PostgreSQL crashes under load: UnavailableError, nothing acked lost, then it recovers."""
    async with private_postgres.fresh_database() as url:
        store = await open_store(url)
        try:
            ann = await store.add_user("ann", "ann", "$argon2id$x", NOW)
            room = await store.add_room("Lobby", "lobby", NOW)
            writers = Writers(store, room.id, ann.id)
            await wait_until(lambda: len(writers.acked) >= 50)
            private_postgres.stop("immediate")
            try:
                await wait_until(lambda: len(writers.errors) >= 20)
                with pytest.raises(UnavailableError):
                    await store.latest_messages(room.id, 10)
                acked_while_down = len(writers.acked)
                await asyncio.sleep(0.2)
                assert len(writers.acked) == acked_while_down, "nothing is acked while down"
            finally:
                private_postgres.start()
            await wait_until(lambda: len(writers.acked) >= acked_while_down + 50, within=20)
            await writers.stop()
            assert all(isinstance(e, UnavailableError) for e in writers.errors)
            await assert_nothing_acknowledged_was_lost(store, room.id, writers.acked)
        finally:
            await store.close()


async def test_postgres_unreachable_or_refusing_at_start_is_one_sentence(
    private_postgres: OwnPostgres,
) -> None:
    """Start-up errors name host and database, never the password."""
    wrong = private_postgres.url(password="not-the-password-x1")
    with pytest.raises(StartupError) as refused:
        await open_store(wrong)
    message = str(refused.value)
    assert "refused the password" in message and f":{private_postgres.port}" in message
    assert "not-the-password-x1" not in message and PASSWORD not in message
    with pytest.raises(StartupError) as missing:
        await open_store(private_postgres.url("no_such_db"))
    assert "'no_such_db'" in str(missing.value) and "does not exist" in str(missing.value)
    closed_port = private_postgres.url().replace(str(private_postgres.port), "1")
    with pytest.raises(StartupError, match="Cannot reach the PostgreSQL database 'postgres'"):
        await open_store(closed_port)


async def test_sqlite_disk_full_mid_write_fails_then_recovers(tmp_path: Path) -> None:
    """SQLite on a full disk: writes fail with StoreError, acked ones stay, then it recovers."""
    store = await open_store(tmp_path / "full.db", synchronous="NORMAL")
    assert isinstance(store, SQLiteStore)
    try:
        ann = await store.add_user("ann", "ann", "$argon2id$x", NOW)
        room = await store.add_room("Lobby", "lobby", NOW)
        writers = Writers(store, room.id, ann.id)
        await wait_until(lambda: len(writers.acked) >= 50)
        await store._writer.run(_limit_pages, 0)  # the disk is out of our hands: simulate it
        await wait_until(lambda: len(writers.errors) >= 20)
        acked_while_full = len(writers.acked)
        await store._writer.run(_limit_pages, 1 << 30)
        await wait_until(lambda: len(writers.acked) >= acked_while_full + 50)
        await writers.stop()
        assert writers.errors and not any(isinstance(e, UnavailableError) for e in writers.errors)
        await assert_nothing_acknowledged_was_lost(store, room.id, writers.acked)
    finally:
        await store.close()


def _limit_pages(db: sqlite3.Connection, extra: int) -> None:
    """Let the file grow by ``extra`` pages at most (0: it is full now)."""
    (current,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count={current + extra}")


async def test_sqlite_file_locked_by_another_process_is_unavailable(tmp_path: Path) -> None:
    """Another program holding the write lock past the busy timeout: unavailable, then fine."""
    path = tmp_path / "locked.db"
    store = await open_store(path, synchronous="NORMAL")
    assert isinstance(store, SQLiteStore)
    try:
        ann = await store.add_user("ann", "ann", "$argon2id$x", NOW)
        room = await store.add_room("Lobby", "lobby", NOW)
        await store._writer.run(lambda db: db.execute("PRAGMA busy_timeout=50"))  # not 5 s
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(UnavailableError):
                await store.append_message(room.id, ann.id, "ann", "blocked", NOW)
        finally:
            other.execute("ROLLBACK")
            other.close()
        stored = await store.append_message(room.id, ann.id, "ann", "through", NOW)
        assert stored.seq == 1, "the refused append took nothing"
    finally:
        await store.close()
