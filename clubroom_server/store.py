"""Every line of SQL: schema, migrations, queries and the group-commit write path.

Writes go through one writer connection and one task: whatever arrives while a
commit is in flight becomes the next transaction (group commit), so durability
(`synchronous=FULL`) costs one fsync per batch, not per message. Reads use
their own connection and never wait behind writes (WAL). Ids are allocated in
memory from the stored sequences so a batch needs no round trip per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiosqlite

log = logging.getLogger(__name__)
T = TypeVar("T")
# aiosqlite logs every call with its arguments at DEBUG (hashes included): never let it.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
CHECKPOINT_INTERVAL = 1.0  # seconds between passive WAL checkpoints

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE rooms (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        author_id INTEGER NOT NULL REFERENCES users(id),
        author TEXT NOT NULL,
        text TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        nonce TEXT
    );
    CREATE INDEX messages_by_room ON messages(room_id, id);
    CREATE UNIQUE INDEX messages_by_nonce ON messages(room_id, author_id, nonce)
        WHERE nonce IS NOT NULL;
    """,
)


class StoreError(Exception):
    """The database could not do what was asked (disk full, read-only, corrupt…)."""


class DuplicateError(StoreError):
    """A uniqueness rule refused the write (e.g. a nonce this user already used here)."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    key: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class RoomRecord:
    id: int
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    room_id: int
    author: str
    text: str
    at_ms: int


class _Write(NamedTuple):
    sql: str
    params: Sequence[Any]
    future: asyncio.Future[None]
    on_commit: Callable[[], None] | None


_MESSAGE_COLUMNS = "id, room_id, author, text, at_ms"
INSERT_MESSAGE = (
    "INSERT INTO messages (id, room_id, author_id, author, text, at_ms, nonce) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class _WriterThread:
    """The one connection that writes, on a thread of its own.

    aiosqlite costs a thread round trip per call, and a group commit is a few
    statements plus the commit; here the whole batch is one call, one round
    trip (the datasette pattern: one writer thread, reads elsewhere).
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._db: sqlite3.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self._db, *args)

    async def open(self, path: Path, pragmas: str) -> None:
        def connect(_: None) -> None:
            self._db = sqlite3.connect(path)
            self._db.executescript(pragmas)

        await self.run(connect)

    async def close(self) -> None:
        if self._db is not None:
            await self.run(sqlite3.Connection.close)
            self._db = None
        self._pool.shutdown(wait=True)


class Store:
    """SQLite storage behind a small async interface (a second backend fits behind it)."""

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.path = path
        self._synchronous = synchronous.upper()
        self._writer = _WriterThread()
        self._reader: aiosqlite.Connection | None = None
        self._queue: list[_Write] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._checkpointer: aiosqlite.Connection | None = None
        self._truncate_wanted = asyncio.Event()
        self._commits_since_checkpoint = 0
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._write_task: asyncio.Task[None] | None = None
        self._next_ids = {"users": 1, "rooms": 1, "messages": 1}

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Create folders and file, migrate, and start the writer and checkpointer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Checkpoints run on their own connection (below), never inside a commit.
        await self._writer.open(
            self.path, self._pragmas + "PRAGMA journal_mode=WAL;PRAGMA wal_autocheckpoint=0;"
        )
        await self._writer.run(_migrate)
        self._next_ids.update(await self._writer.run(_load_sequences))
        self._reader = await self._connect()
        await self._reader.execute("PRAGMA query_only=ON")
        self._checkpointer = await self._connect()
        self._write_task = asyncio.create_task(self._write_loop(), name="store-writer")
        self._checkpoint_task = asyncio.create_task(
            self._checkpoint_loop(), name="store-checkpointer"
        )

    @property
    def _pragmas(self) -> str:
        return (
            f"PRAGMA synchronous={self._synchronous};"
            "PRAGMA foreign_keys=ON;"
            "PRAGMA secure_delete=ON;"
            "PRAGMA busy_timeout=5000;"
        )

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path)
        await db.executescript(self._pragmas)
        return db

    async def close(self) -> None:
        """Finish every queued write, fold the WAL in, close every connection (idempotent)."""
        self._closing = True
        self._wakeup.set()
        if self._write_task is not None:
            await self._write_task
            self._write_task = None
        if self._checkpoint_task is not None:
            self._truncate_wanted.set()  # wake it: it sees the store is closing
            await self._checkpoint_task
            self._checkpoint_task = None
            await self._checkpoint("TRUNCATE")
        for db in (self._checkpointer, self._reader):
            if db is not None:
                await db.close()
        self._checkpointer = self._reader = None
        await self._writer.close()

    def allocate_id(self, table: str) -> int:
        """Hand out the next id of ``users``, ``rooms`` or ``messages``."""
        value = self._next_ids[table]
        self._next_ids[table] = value + 1
        return value

    # ------------------------------------------------------------ write path

    def enqueue(
        self, sql: str, params: Sequence[Any], on_commit: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        """Queue one statement for the next group commit; the future resolves once durable.

        ``on_commit`` runs right after the commit, in queue order, before any
        future resolves: the place to announce what was just stored.
        """
        if self._closing:
            raise StoreError("the store is closing")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(sql, params, future, on_commit))
        self._wakeup.set()
        return future

    async def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement durably (through the group commit)."""
        await self.enqueue(sql, params)

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._commit(batch)
                self._commits_since_checkpoint += 1
            elif self._closing:
                return

    async def _commit(self, batch: list[_Write]) -> None:
        """Commit a batch in one transaction; on failure retry each write alone."""
        try:
            await self._writer.run(_commit_all, _group_by_statement(batch))
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            if len(batch) == 1:
                _settle(batch, _store_error(exc))
                return
            for write in batch:
                await self._commit([write])
            return
        _settle(batch, None)

    # ----------------------------------------------------------------- users

    async def user_by_key(self, key: str) -> UserRecord | None:
        rows = await self._read(
            "SELECT id, username, key, password_hash FROM users WHERE key = ?", (key,)
        )
        return UserRecord(*rows[0]) if rows else None

    async def add_user(self, username: str, key: str, password_hash: str, now_ms: int) -> int:
        user_id = self.allocate_id("users")
        await self.write(
            "INSERT INTO users (id, username, key, password_hash, created_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (user_id, username, key, password_hash, now_ms),
        )
        return user_id

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self.write(
            "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
        )

    # ---------------------------------------------------------------- tokens

    async def add_token(self, token_hash: str, user_id: int, expires_ms: int) -> None:
        await self.write(
            "INSERT INTO tokens (hash, user_id, expires_ms) VALUES (?, ?, ?)",
            (token_hash, user_id, expires_ms),
        )

    async def user_by_token(self, token_hash: str, now_ms: int) -> tuple[UserRecord, int] | None:
        """The user a live token belongs to, and when the token expires."""
        rows = await self._read(
            "SELECT u.id, u.username, u.key, u.password_hash, t.expires_ms, t.hash "
            "FROM tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.hash = ? AND t.expires_ms > ?",
            (token_hash, now_ms),
        )
        if not rows:
            return None
        *user, expires_ms, stored_hash = rows[0]
        if not hmac.compare_digest(stored_hash, token_hash):
            return None
        return UserRecord(*user), expires_ms

    async def revoke_token(self, token_hash: str) -> None:
        await self.write("DELETE FROM tokens WHERE hash = ?", (token_hash,))

    async def purge_expired_tokens(self, now_ms: int) -> None:
        await self.write("DELETE FROM tokens WHERE expires_ms <= ?", (now_ms,))

    # ----------------------------------------------------------------- rooms

    async def all_rooms(self) -> list[RoomRecord]:
        rows = await self._read("SELECT id, name, key FROM rooms ORDER BY id")
        return [RoomRecord(*row) for row in rows]

    def enqueue_add_room(self, room: RoomRecord, now_ms: int) -> asyncio.Future[None]:
        return self.enqueue(
            "INSERT INTO rooms (id, name, key, created_ms) VALUES (?, ?, ?, ?)",
            (room.id, room.name, room.key, now_ms),
        )

    def enqueue_delete_room(self, room_id: int) -> asyncio.Future[None]:
        """Delete a room; its messages go with it (``ON DELETE CASCADE``).

        ``secure_delete`` overwrites the freed pages, and the checkpoint that
        follows the commit empties the WAL, so the text cannot be read back
        from ``clubroom.db*`` afterwards.
        """
        return self.enqueue(
            "DELETE FROM rooms WHERE id = ?", (room_id,), on_commit=self._truncate_wanted.set
        )

    async def _checkpoint_loop(self) -> None:
        """Fold the WAL into the database now and then, off the commit path.

        A passive checkpoint every second keeps the WAL short without ever
        blocking a writer; after a room deletion the WAL is also truncated, so
        the deleted text leaves the disk. It stops when the store closes (by
        flag, not cancellation: a cancelled wait can be lost on Python 3.11).
        """
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECKPOINT_INTERVAL):
                    await self._truncate_wanted.wait()
            if self._closing:
                return
            if self._truncate_wanted.is_set():
                self._truncate_wanted.clear()
                await self._checkpoint("TRUNCATE")
            elif self._commits_since_checkpoint:
                await self._checkpoint("PASSIVE")

    async def _checkpoint(self, mode: str) -> None:
        assert self._checkpointer is not None
        self._commits_since_checkpoint = 0
        try:
            await self._checkpointer.execute(f"PRAGMA wal_checkpoint({mode})")
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed: %s", exc)

    # -------------------------------------------------------------- messages

    def enqueue_message(
        self,
        message: MessageRecord,
        author_id: int,
        nonce: str | None,
        on_commit: Callable[[], None],
    ) -> asyncio.Future[None]:
        return self.enqueue(
            INSERT_MESSAGE,
            (
                message.id,
                message.room_id,
                author_id,
                message.author,
                message.text,
                message.at_ms,
                nonce,
            ),
            on_commit,
        )

    async def message_by_nonce(
        self, room_id: int, author_id: int, nonce: str
    ) -> MessageRecord | None:
        rows = await self._read(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages "
            "WHERE room_id = ? AND author_id = ? AND nonce = ?",
            (room_id, author_id, nonce),
        )
        return MessageRecord(*rows[0]) if rows else None

    async def latest_messages(self, room_id: int, limit: int) -> tuple[list[MessageRecord], bool]:
        """The newest ``limit`` messages, oldest first, and whether older ones exist."""
        return await self.messages_before(room_id, None, limit)

    async def messages_before(
        self, room_id: int, before: int | None, limit: int
    ) -> tuple[list[MessageRecord], bool]:
        """Up to ``limit`` messages with id < ``before``, oldest first, and whether more exist."""
        bound = "" if before is None else "AND id < ?"
        params: tuple[int, ...] = (room_id,) if before is None else (room_id, before)
        rows = await self._read(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room_id = ? {bound} "
            "ORDER BY id DESC LIMIT ?",
            (*params, limit + 1),
        )
        more = len(rows) > limit
        return [MessageRecord(*row) for row in reversed(rows[:limit])], more

    async def messages_after(
        self, room_id: int, after: int, limit: int
    ) -> tuple[list[MessageRecord], bool]:
        """Up to ``limit`` messages with id > ``after``, oldest first, and whether more remain."""
        rows = await self._read(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (room_id, after, limit + 1),
        )
        return [MessageRecord(*row) for row in rows[:limit]], len(rows) > limit

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        assert self._reader is not None, "the store is not open"
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            log.error("database read failed: %s", exc)
            raise StoreError(str(exc)) from exc


def _migrate(db: sqlite3.Connection) -> None:
    """Apply the numbered migrations the file has not seen (``PRAGMA user_version``)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        log.info("migrating database to schema version %d", number)
        db.executescript(f"BEGIN;{script};PRAGMA user_version={number};COMMIT;")


def _load_sequences(db: sqlite3.Connection) -> dict[str, int]:
    """The next ids: after the largest ever used, deleted rows included."""
    next_ids = {}
    for table in ("rooms", "messages"):
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        next_ids[table] = (row[0] if row else 0) + 1
    (largest_user,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM users").fetchone()
    next_ids["users"] = largest_user + 1
    return next_ids


def _commit_all(db: sqlite3.Connection, groups: list[tuple[str, list[Sequence[Any]]]]) -> None:
    """One transaction for the whole batch, rolled back whole if any statement fails."""
    try:
        for sql, params in groups:
            db.executemany(sql, params)
        db.commit()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.rollback()
        raise


def _store_error(exc: Exception) -> StoreError:
    """Name a failed write: a broken uniqueness rule is the caller's business, the rest ours."""
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return DuplicateError(str(exc))
    log.error("database write failed: %s", exc)
    return StoreError(str(exc))


def _group_by_statement(batch: Iterable[_Write]) -> list[tuple[str, list[Sequence[Any]]]]:
    """Runs of the same statement become one ``executemany`` (one thread hop)."""
    groups: list[tuple[str, list[Sequence[Any]]]] = []
    for write in batch:
        if groups and groups[-1][0] == write.sql:
            groups[-1][1].append(write.params)
        else:
            groups.append((write.sql, [write.params]))
    return groups


def _settle(batch: list[_Write], error: StoreError | None) -> None:
    """Announce committed writes in order, then wake whoever awaits them."""
    for write in batch:
        if error is None and write.on_commit is not None:
            try:
                write.on_commit()
            except Exception:  # an announcement must never undo a commit
                log.exception("post-commit callback failed")
    for write in batch:
        if write.future.done():
            continue
        if error is None:
            write.future.set_result(None)
        else:
            write.future.set_exception(error)
